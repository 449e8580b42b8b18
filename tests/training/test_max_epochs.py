"""How long a run trains: ``TrainConfig.epochs`` within ``[min_steps, max_steps]``, at least
``min_epochs`` passes past ``max_steps`` (large data), capped by ``max_epochs`` passes."""

from __future__ import annotations

import json
import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from rnadiff import (
    InputError,
    ModelConfig,
    NetworkConfig,
    PreprocessConfig,
    RNADiffusion,
    TrainConfig,
)

KANG_SETUP = {"perturbation_key": "group_id", "control": "ctrl", "cell_type_key": "cluster_id"}


@pytest.mark.parametrize(
    ("n_cells", "kwargs", "expected"),
    [
        (192, {}, 300),  # the HSMM time course: 200 passes of 192 cells in batches of 128
        (1402, {}, 800),  # a Kang fold: min_steps (12 passes would be 132 steps)
        (12873, {}, 1207),  # Papalexi: ceil(12 * 12873 / 128)
        (34_133, {}, 3200),  # the largest data set at batch 128: 12 passes
        (34_134, {}, 801),  # batch 512 from here: 12 passes of 512 fill min_steps
        (100_000, {}, 2344),  # 12 passes of 512
        (10**6, {}, 4000),  # 2 passes of 512 = 3907 < max_steps
        (5 * 10**6, {}, 19_532),  # past max_steps: min_epochs = 2 passes, not 0.4
        (42_667, {"batch_size": 128}, 4000),  # 12 passes reach max_steps
        (256_000, {"batch_size": 128}, 4000),  # 2 passes = max_steps
        (10**6, {"batch_size": 128}, 15_625),  # min_epochs = 2 passes, not half a pass
        (10**6, {"batch_size": 128, "min_epochs": None}, 4000),  # max_steps bounds the run
        (10**6, {"batch_size": 128, "min_epochs": 1.0}, 7813),  # ceil(10**6 / 128)
        (10**6, {"batch_size": 1024}, 4000),  # 2 passes of 1024 = 1954 < max_steps
        (10**6, {"batch_size": 128, "epochs": 0.5}, 3907),  # never more passes than epochs
        (10**6, {"epochs": 0.5}, 977),  # half a pass of 512 fills min_steps: batch 512
        (10**6, {"epochs": None}, 4000),  # no rule: max_steps exactly
        (192, {"max_epochs": None}, 800),
        (192, {"max_epochs": None, "epochs": None}, 4000),  # no rule: max_steps
        (12873, {"epochs": None, "max_steps": 1200}, 1200),
        (12873, {"epochs": 2, "min_steps": 10, "batch_size": 128}, 202),
        (12873, {"epochs": 2, "min_steps": 10}, 51),  # 2 passes of 512 fill 10 steps
        (50, {"max_epochs": 3}, 3),  # fewer cells than a batch: one step is one pass
        (1000, {"max_epochs": 0.01}, 1),  # at least one step
        (300, {"max_epochs": 10, "batch_size": 64}, 47),  # ceil(10 * 300 / 64)
    ],
)
def test_steps_for(n_cells, kwargs, expected):
    assert TrainConfig(**kwargs).steps_for(n_cells) == expected


@pytest.mark.parametrize(
    ("n_cells", "kwargs", "expected"),
    [
        (192, {}, 128),  # HSMM
        (1402, {}, 128),  # a Kang fold
        (20_729, {}, 128),  # all of Papalexi
        (34_133, {}, 128),  # 12 * 34,133 / 512 = 799.99 < min_steps
        (34_134, {}, 512),
        (10**6, {}, 512),
        (10**6, {"batch_size": 128}, 128),  # a batch given is kept
        (100_000, {"min_steps": 2400}, 128),  # 12 passes of 512 = 2344 steps < 2400
        (100_000, {"epochs": 2}, 128),  # 2 passes of 512 = 391 steps
        (30_000, {"epochs": None}, 128),  # a fixed length: judged at 12 passes
        (40_000, {"epochs": None}, 512),
    ],
)
def test_batch_for(n_cells, kwargs, expected):
    assert TrainConfig(**kwargs).batch_for(n_cells) == expected


def test_batch_size_must_be_positive():
    with pytest.raises(InputError, match="batch_size must be >= 1"):
        TrainConfig(batch_size=0)


def test_training_records_the_batch_that_follows_the_data(
    kang_small, tiny_model_config, one_thread, tmp_path, caplog
):
    """400 cells, 2 passes and a floor of one step: 512 fills the floor (each step is the
    whole data set), stored in the config and in the checkpoint as the global batch."""
    model = _model(kang_small, tiny_model_config)
    with caplog.at_level(logging.INFO, logger="rnadiff"):
        model.train(
            config=TrainConfig(
                epochs=2, min_steps=1, calibration_cells=0, spread_cells=0, anchor_cells=0
            ),
            progress=False,
        )
    assert "training 2 steps of 512 cells (2 passes over 400 cells)" in caplog.text
    assert model.train_config.batch_size == 512
    assert model.step == 2  # one pass of 400 cells per step
    model.save(tmp_path / "m")
    (meta,) = [
        json.loads(p.read_text())
        for p in (tmp_path / "m").glob("*.json")
        if "distributed" in json.loads(p.read_text())
    ]
    assert meta["distributed"]["global_batch"] == 512
    small = _model(kang_small.copy(), tiny_model_config)
    small.train(config=TrainConfig(max_steps=2, calibration_cells=0), progress=False)
    assert small.train_config.batch_size == 128  # 12 passes of 512 < 800 steps


@pytest.mark.parametrize("value", [0, -1, float("inf"), float("nan")])
def test_max_epochs_must_be_positive(value):
    with pytest.raises(InputError, match="max_epochs"):
        TrainConfig(max_epochs=value)
    with pytest.raises(InputError, match="epochs must be positive"):
        TrainConfig(epochs=value)


@pytest.mark.parametrize("value", [0, -1, float("inf")])
def test_min_epochs_must_be_positive(value):
    with pytest.raises(InputError, match="min_epochs"):
        TrainConfig(min_epochs=value)


def test_min_steps_must_be_positive():
    with pytest.raises(InputError, match="min_steps must be >= 1"):
        TrainConfig(min_steps=0)


def _model(kang_small, tiny_model_config):
    RNADiffusion.setup_anndata(kang_small, **KANG_SETUP)
    return RNADiffusion(kang_small, config=tiny_model_config, seed=0)


def test_training_stops_at_max_epochs_and_says_so(
    kang_small, tiny_model_config, one_thread, caplog
):
    model = _model(kang_small, tiny_model_config)  # 400 cells
    cfg = TrainConfig(max_steps=40, batch_size=100, max_epochs=5, calibration_cells=0)
    with caplog.at_level(logging.INFO, logger="rnadiff"):
        model.train(config=cfg, progress=False)
    assert model.step == 20  # 5 passes of 400 cells in batches of 100
    assert model.history[-1]["step"] == 20
    assert model.train_config.max_steps == 40  # the user's setting is kept as given
    assert "training stops at 20 of 40 steps: max_epochs=5" in caplog.text


def test_explicit_max_steps_trains_exactly_that_many_steps(
    kang_small, tiny_model_config, one_thread
):
    """``train(max_steps=N)`` overrides the epochs rule; the config alone follows it."""
    cfg = TrainConfig(batch_size=100, epochs=1, min_steps=3, calibration_cells=0)
    assert cfg.steps_for(kang_small.n_obs) == 4  # one pass of 400 cells
    by_rule = _model(kang_small.copy(), tiny_model_config)
    by_rule.train(config=cfg, progress=False)
    assert by_rule.step == 4
    exact = _model(kang_small.copy(), tiny_model_config)
    exact.train(config=cfg, max_steps=7, progress=False)
    assert exact.step == 7
    assert exact.train_config.epochs is None and exact.train_config.max_steps == 7


def test_capped_run_equals_a_run_of_that_many_steps(kang_small, tiny_model_config, one_thread):
    """The learning-rate schedule ends where training ends, as for a shorter max_steps."""
    capped = _model(kang_small.copy(), tiny_model_config)
    capped.train(
        config=TrainConfig(max_steps=40, batch_size=100, max_epochs=5, calibration_cells=0),
        progress=False,
    )
    short = _model(kang_small.copy(), tiny_model_config)
    short.train(
        config=TrainConfig(max_steps=20, batch_size=100, max_epochs=None, calibration_cells=0),
        progress=False,
    )
    for a, b in zip(capped.ema.parameters(), short.ema.parameters(), strict=True):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


def test_no_cap_trains_every_step(kang_small, tiny_model_config, one_thread):
    model = _model(kang_small, tiny_model_config)
    model.train(
        config=TrainConfig(max_steps=30, batch_size=200, max_epochs=None, calibration_cells=0),
        progress=False,
    )
    assert model.step == 30


def test_checkpoints_from_before_max_epochs_load_without_a_cap(
    kang_small, tiny_model_config, one_thread, tmp_path
):
    model = _model(kang_small, tiny_model_config)
    model.train(max_steps=2, progress=False, config=TrainConfig(calibration_cells=0))
    model.save(tmp_path / "m")
    stored = model.load(tmp_path / "m", adata=kang_small).train_config
    assert stored.max_epochs == 200.0
    meta_files = [p for p in (tmp_path / "m").iterdir() if p.suffix == ".json"]
    edited = 0
    for path in meta_files:
        meta = json.loads(path.read_text())
        if "train_config" in meta:
            del meta["train_config"]["max_epochs"]
            meta["version"] = 1  # a checkpoint of that time: format 1, no manifest
            path.write_text(json.dumps(meta))
            edited += 1
    assert edited == 1
    (tmp_path / "m" / "manifest.json").unlink()
    assert RNADiffusion.load(tmp_path / "m", adata=kang_small).train_config.max_epochs is None


def test_checkpoints_from_before_epochs_train_exactly_max_steps(
    kang_small, tiny_model_config, one_thread, tmp_path
):
    model = _model(kang_small, tiny_model_config)
    model.train(progress=False, config=TrainConfig(max_steps=2, calibration_cells=0))
    assert model.train_config.epochs == 12.0
    model.save(tmp_path / "m")
    for path in (tmp_path / "m").glob("*.json"):
        meta = json.loads(path.read_text())
        if "train_config" in meta:
            del meta["train_config"]["epochs"], meta["train_config"]["min_steps"]
            meta["version"] = 1  # a checkpoint of that time: format 1, no manifest
            path.write_text(json.dumps(meta))
    (tmp_path / "m" / "manifest.json").unlink()
    stored = RNADiffusion.load(tmp_path / "m", adata=kang_small).train_config
    assert stored.epochs is None and stored.min_steps == 800
    assert stored.steps_for(10**6) == stored.max_steps == 2


def test_predict_keeps_continuous_values_numeric(one_thread):
    """A dose given as text (as a CLI passes it) is a number in the result's obs."""
    rng = np.random.default_rng(0)
    n = 60
    adata = ad.AnnData(
        rng.poisson(3, size=(n, 20)).astype(np.float32),
        obs=pd.DataFrame(
            {
                "drug": np.where(np.arange(n) < 30, "ctrl", "A"),
                "dose": np.where(np.arange(n) < 30, 0.0, 10.0),
            },
            index=[f"c{i}" for i in range(n)],
        ),
    )
    adata.var_names = [f"g{i}" for i in range(20)]
    RNADiffusion.setup_anndata(adata, perturbation_key="drug", control="ctrl", dose_key="dose")
    config = ModelConfig(
        network=NetworkConfig(width=16, depth=1, emb_dim=8),
        preprocess=PreprocessConfig(n_top_genes=None),
    )
    model = RNADiffusion(adata, config=config)
    model.train(max_steps=2, progress=False, config=TrainConfig(calibration_cells=0))
    fast = {"steps": 2, "progress": False}
    out = model.predict(adata[:30], target={"drug": "A", "dose": "5"}, **fast)
    assert pd.api.types.is_float_dtype(out.obs["dose"]) and (out.obs["dose"] == 5.0).all()
    gen = model.generate({"drug": "A", "dose": "5"}, n_cells=2, **fast)
    assert pd.api.types.is_float_dtype(gen.obs["dose"]) and (gen.obs["dose"] == 5.0).all()
    with pytest.raises(InputError, match="'dose' is continuous; 'high' is not a number"):
        model.generate({"drug": "A", "dose": "high"}, n_cells=2, **fast)


@pytest.mark.parametrize(
    ("precision", "batch", "device", "native", "expected"),
    [
        ("auto", 512, "cpu", True, "bf16"),  # large data on a CPU with native bf16
        ("auto", 1024, "cpu", True, "bf16"),
        ("auto", 128, "cpu", True, "fp32"),  # small data: no faster, fp32
        ("auto", 512, "cpu", False, "fp32"),  # emulated bf16 would be slower
        ("auto", 512, "cuda", True, "fp32"),  # not measured on a GPU
        ("fp32", 512, "cpu", True, "fp32"),  # given: kept
        ("bf16", 128, "cpu", False, "bf16"),
    ],
)
def test_precision_for(monkeypatch, precision, batch, device, native, expected):
    import rnadiff._config as config

    monkeypatch.setattr(config, "cpu_has_native_bf16", lambda: native)
    assert TrainConfig(precision=precision).precision_for(batch, device) == expected


def test_precision_must_be_known():
    with pytest.raises(InputError, match="precision must be 'auto', 'fp32' or 'bf16'"):
        TrainConfig(precision="fp16")


@pytest.mark.parametrize("native", [True, False])
def test_training_records_the_precision_it_ran_at(
    kang_small, tiny_model_config, one_thread, monkeypatch, caplog, native
):
    """At batch 512 on a CPU with native bf16 the run autocasts to bf16 (said in the plan,
    stored in the run's config, so a resumed run keeps it); without, fp32. Both train."""
    import rnadiff._config as config

    monkeypatch.setattr(config, "cpu_has_native_bf16", lambda: native)
    model = _model(kang_small, tiny_model_config)
    quick = dict(calibration_cells=0, spread_cells=0, anchor_cells=0)
    with caplog.at_level(logging.INFO, logger="rnadiff"):
        model.train(config=TrainConfig(max_steps=2, batch_size=512, **quick), progress=False)
    assert model.train_config.precision == ("bf16" if native else "fp32")
    assert ("bf16 autocast" in caplog.text) == native
    assert np.isfinite(model.history[-1]["loss"])
    small = _model(kang_small.copy(), tiny_model_config)
    small.train(config=TrainConfig(max_steps=2, **quick), progress=False)
    assert small.train_config.precision == "fp32"  # batch 128
