"""Every error a user can trigger is an ``rnadiff.InputError`` whose message names the culprit.

Models here are tiny and untrained: each error must come before any sampling or training.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import rnadiff
from rnadiff import (
    DiffusionConfig,
    InputError,
    ModelConfig,
    NetworkConfig,
    PreprocessConfig,
    RNADiffusion,
    TrainConfig,
)

KANG_SETUP = {"perturbation_key": "group_id", "control": "ctrl", "cell_type_key": "cluster_id"}
FAST = {"steps": 2, "progress": False}


def assert_names(info: pytest.ExceptionInfo, *needles: str) -> None:
    """The error is exactly rnadiff.InputError and its message contains every needle."""
    assert info.type is rnadiff.InputError
    message = str(info.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in the message {message!r}"


def dense(X) -> np.ndarray:
    return np.asarray(X.toarray() if sp.issparse(X) else X)


@pytest.fixture
def model(kang_small, tiny_model_config) -> RNADiffusion:
    """An untrained tiny model of the Kang slice (condition group_id, cell type cluster_id)."""
    RNADiffusion.setup_anndata(kang_small, **KANG_SETUP)
    return RNADiffusion(kang_small, config=tiny_model_config)


@pytest.fixture
def ctrl_cells(kang_small) -> ad.AnnData:
    """Control B cells of the Kang slice, a source for predict."""
    obs = kang_small.obs
    return kang_small[(obs["group_id"] == "ctrl") & (obs["cluster_id"] == "B cells")].copy()


# ------------------------------------------------------------------ setup_anndata
@pytest.mark.parametrize(
    "kwargs",
    [
        {"perturbation_key": "treatment"},
        {"cell_type_key": "treatment"},
        {"batch_key": "treatment"},
        {"categorical_keys": ["sample_id", "treatment"]},
        {"dose_key": "treatment"},
        {"time_key": "treatment"},
        {"continuous_keys": ["treatment"]},
    ],
    ids=lambda kw: next(iter(kw)),
)
def test_missing_obs_column(kang_small, kwargs):
    with pytest.raises(InputError) as info:
        RNADiffusion.setup_anndata(kang_small, **kwargs)
    assert_names(info, "'treatment'", "not found in adata.obs")
    assert "rnadiff_setup" not in kang_small.uns


@pytest.mark.parametrize(
    ("column", "kwargs"),
    [
        ("cluster_id", {"cell_type_key": "cluster_id"}),
        ("group_id", {"perturbation_key": "group_id", "control": "ctrl"}),
        ("tsne1", {"continuous_keys": ["tsne1"]}),
    ],
)
def test_nan_in_a_covariate_column(kang_small, column, kwargs):
    values = kang_small.obs[column].astype(object if column != "tsne1" else float).to_numpy()
    values[[3, 10]] = np.nan
    kang_small.obs[column] = values
    with pytest.raises(InputError) as info:
        RNADiffusion.setup_anndata(kang_small, **kwargs)
    assert_names(info, f"column {column!r}", "2 missing (NaN) values")


def test_control_value_not_present(kang_small):
    with pytest.raises(InputError) as info:
        RNADiffusion.setup_anndata(kang_small, perturbation_key="group_id", control="control")
    assert_names(info, "'control'", "'group_id'", "ctrl", "stim")


def test_control_without_perturbation_key(kang_small):
    with pytest.raises(InputError) as info:
        RNADiffusion.setup_anndata(kang_small, control="ctrl")
    assert_names(info, "perturbation_key")


def test_unknown_layer(kang_small):
    with pytest.raises(InputError) as info:
        RNADiffusion.setup_anndata(kang_small, **KANG_SETUP, layer="counts")
    assert_names(info, "layer 'counts' not found", "logcounts")


def test_layer_removed_after_setup(kang_small, tiny_model_config):
    RNADiffusion.setup_anndata(kang_small, **KANG_SETUP, layer="logcounts")
    del kang_small.layers["logcounts"]
    with pytest.raises(InputError) as info:
        RNADiffusion(kang_small, config=tiny_model_config)
    assert_names(info, "layer 'logcounts' not found")


def test_model_without_setup_anndata(kang_small, tiny_model_config):
    with pytest.raises(InputError) as info:
        RNADiffusion(kang_small, config=tiny_model_config)
    assert_names(info, "setup_anndata")


# ------------------------------------------------------------------ expression values
def _corrupt(adata: ad.AnnData, storage: str, value: float) -> None:
    X = dense(adata.X).astype(np.float32)
    row, col = 7, int(np.flatnonzero(X[7])[0])
    X[row, col] = value
    adata.X = sp.csr_matrix(X) if storage == "sparse" else X


@pytest.mark.parametrize("storage", ["sparse", "dense"])
@pytest.mark.parametrize(
    ("value", "needles"),
    [
        (np.nan, ["adata.X", "1 NaN or infinite"]),
        (np.inf, ["adata.X", "1 NaN or infinite"]),
        (-1.0, ["adata.X", "1 negative values"]),
    ],
    ids=["nan", "inf", "negative"],
)
def test_bad_values_in_x(kang_small, tiny_model_config, storage, value, needles):
    _corrupt(kang_small, storage, value)
    RNADiffusion.setup_anndata(kang_small, **KANG_SETUP)
    with pytest.raises(InputError) as info:
        RNADiffusion(kang_small, config=tiny_model_config)
    assert_names(info, *needles)


@pytest.mark.parametrize(("value", "needle"), [(np.nan, "NaN"), (-3.0, "negative")])
def test_bad_values_in_predict_source(model, ctrl_cells, value, needle):
    _corrupt(ctrl_cells, "sparse", value)
    with pytest.raises(InputError) as info:
        model.predict(ctrl_cells, perturbation="stim", **FAST)
    assert_names(info, "adata.X", needle)


@pytest.mark.parametrize("layer", [None, "logcounts"])
def test_non_integer_values_when_counts_are_required(kang_small, layer):
    if layer is None:
        kang_small.X = kang_small.layers["logcounts"].copy()
    RNADiffusion.setup_anndata(kang_small, **KANG_SETUP, layer=layer)
    config = ModelConfig(
        network=NetworkConfig(width=32, depth=1, emb_dim=16),
        preprocess=PreprocessConfig(input="counts", n_top_genes=100),
    )
    with pytest.raises(InputError) as info:
        RNADiffusion(kang_small, config=config)
    what = "adata.X" if layer is None else "adata.layers['logcounts']"
    assert_names(info, what, "raw counts", "non-integer", "input='lognorm'")


def test_unlogged_values_declared_lognorm(kang_small):
    kang_small.X = kang_small.X * np.float32(1.5)  # non-integers far above 30
    RNADiffusion.setup_anndata(kang_small, **KANG_SETUP)
    config = ModelConfig(preprocess=PreprocessConfig(input="lognorm", n_top_genes=100))
    with pytest.raises(InputError) as info:
        RNADiffusion(kang_small, config=config)
    assert_names(info, "input='lognorm'", "adata.X")


def test_cells_without_counts(kang_small, tiny_model_config):
    X = dense(kang_small.X)
    X[[2, 5]] = 0
    kang_small.X = sp.csr_matrix(X)
    RNADiffusion.setup_anndata(kang_small, **KANG_SETUP)
    with pytest.raises(InputError) as info:
        RNADiffusion(kang_small, config=tiny_model_config)
    assert_names(info, "2 cells have no counts")


def test_duplicate_gene_names(kang_small, tiny_model_config):
    kang_small.var_names = [*kang_small.var_names[:-1], kang_small.var_names[0]]
    with pytest.raises(InputError) as info:  # refused when the data are registered
        RNADiffusion.setup_anndata(kang_small, **KANG_SETUP)
    assert_names(info, "not unique", kang_small.var_names[0])


# ------------------------------------------------------------------ generate / predict
@pytest.mark.parametrize(
    ("conditions", "needles"),
    [
        ({"group_id": "IFN-gamma"}, ["unknown perturbation 'IFN-gamma'", "'group_id'"]),
        ([{"group_id": "stim"}, {"group_id": "LPS"}], ["'LPS'", "'group_id'"]),
        ({"cluster_id": "Neurons"}, ["unknown value 'Neurons'", "'cluster_id'"]),
        ({"group_id": "stim", "donor": "d1"}, ["unknown covariates ['donor']"]),
    ],
    ids=["perturbation", "perturbation-in-list", "cell-type", "covariate-key"],
)
def test_generate_unknown_conditions(model, conditions, needles):
    with pytest.raises(InputError) as info:
        model.generate(conditions, n_cells=2, **FAST)
    assert_names(info, *needles)


@pytest.mark.parametrize(
    ("kwargs", "needles"),
    [
        ({"perturbation": "IFN-gamma"}, ["unknown perturbation 'IFN-gamma'", "'group_id'"]),
        ({"target": {"cluster_id": "Neurons"}}, ["unknown value 'Neurons'", "'cluster_id'"]),
        ({"target": {"donor": "d1"}}, ["'donor' is not a covariate"]),
    ],
    ids=["perturbation", "cell-type", "covariate-key"],
)
def test_predict_unknown_target(model, ctrl_cells, kwargs, needles):
    with pytest.raises(InputError) as info:
        model.predict(ctrl_cells, **kwargs, **FAST)
    assert_names(info, *needles)


def test_predict_source_with_unknown_cell_type(model, ctrl_cells):
    ctrl_cells.obs["cluster_id"] = "Megakaryocytes"
    with pytest.raises(InputError) as info:
        model.predict(ctrl_cells, perturbation="stim", **FAST)
    assert_names(info, "unknown value 'Megakaryocytes'", "'cluster_id'")


def test_predict_source_without_a_covariate_column(model, ctrl_cells):
    del ctrl_cells.obs["cluster_id"]
    with pytest.raises(InputError) as info:
        model.predict(ctrl_cells, perturbation="stim", **FAST)
    assert_names(info, "'cluster_id'", "missing")


def test_predict_source_lacks_genes(model, ctrl_cells):
    dropped = model.genes[::10]  # 10 of the model's 100 genes
    source = ctrl_cells[:, ~ctrl_cells.var_names.isin(dropped)].copy()
    with pytest.raises(InputError) as info:
        model.predict(source, perturbation="stim", **FAST)
    assert_names(info, "10 of the model's 100 genes", sorted(dropped)[0])


def test_predict_lognorm_source_on_a_counts_model(model, ctrl_cells):
    assert model.preprocess.input_type == "counts"
    ctrl_cells.X = ctrl_cells.layers["logcounts"].copy()
    with pytest.raises(InputError) as info:
        model.predict(ctrl_cells, perturbation="stim", **FAST)
    assert_names(info, "trained on raw counts", "log-normalized", "raw counts")


def test_predict_source_with_duplicate_gene_names(model, ctrl_cells):
    copy = ad.AnnData(
        X=ctrl_cells[:, :1].X.copy(), obs=ctrl_cells.obs[[]], var=pd.DataFrame(index=["dup"])
    )
    source = ad.concat([ctrl_cells, copy], axis=1)
    source.obs = ctrl_cells.obs.copy()
    source.var_names = [*ctrl_cells.var_names, model.genes[0]]  # one model gene twice
    with pytest.raises(InputError) as info:
        model.predict(source, perturbation="stim", **FAST)
    assert_names(info, "not unique", model.genes[0])


@pytest.mark.parametrize("method", ["generate", "predict"])
def test_unknown_sampler(model, ctrl_cells, method):
    with pytest.raises(InputError) as info:
        if method == "generate":
            model.generate({"group_id": "stim"}, n_cells=2, sampler="ddim", **FAST)
        else:
            model.predict(ctrl_cells, perturbation="stim", sampler="ddim", **FAST)
    assert_names(info, "unknown sampler 'ddim'", "heun")


@pytest.mark.parametrize(
    "kwargs", [{"sampler": "ddim"}, {"guidance": {"donor": 2.0}}], ids=["sampler", "guidance"]
)
def test_predict_checks_arguments_before_encoding(model, ctrl_cells, monkeypatch, kwargs):
    def no_encoding(*args, **kw):
        raise AssertionError("the source cells were encoded before the arguments were checked")

    monkeypatch.setattr("rnadiff.sampling._engine.encode", no_encoding)
    with pytest.raises(InputError):
        model.predict(ctrl_cells, perturbation="stim", **kwargs, **FAST)


@pytest.mark.parametrize(
    ("kwargs", "needles"),
    [
        ({"n_cells": 0}, ["n_cells", "got 0"]),
        ({"steps": 0}, ["steps", "got 0"]),
        ({"guidance": {"donor": 2.0}}, ["'donor' is not a covariate"]),
    ],
    ids=["n_cells", "steps", "guidance-key"],
)
def test_generate_bad_arguments(model, kwargs, needles):
    args = {"n_cells": 2, **FAST, **kwargs}
    with pytest.raises(InputError) as info:
        model.generate({"group_id": "stim"}, **args)
    assert_names(info, *needles)


@pytest.mark.parametrize(
    ("kwargs", "needles"),
    [
        ({"guidance": float("nan")}, ["guidance", "out of range", "nan"]),
        ({"guidance": {"group_id": float("inf")}}, ["guidance", "out of range", "inf"]),
        ({"guidance": 1e30}, ["guidance", "out of range", "-20 to 50"]),
        ({"guidance": "strong"}, ["guidance", "'strong'"]),
        ({"transfer_scale": float("nan")}, ["transfer_scale", "nan"]),
        ({"transfer_scale": -1.0}, ["transfer_scale", "from 0 to 20", "-1"]),
        ({"transfer_scale": 1e9}, ["transfer_scale", "out of range"]),
        ({"batch_size": 0}, ["batch_size", "got 0"]),
    ],
    ids=[
        "guidance-nan",
        "guidance-inf",
        "guidance-huge",
        "guidance-text",
        "scale-nan",
        "scale-negative",
        "scale-huge",
        "batch",
    ],
)
@pytest.mark.parametrize("method", ["generate", "predict"])
def test_sampling_settings_must_be_finite(model, ctrl_cells, method, kwargs, needles):
    """A NaN weight or scale would fill every generated cell with NaN without a word."""
    with pytest.raises(InputError) as info:
        if method == "generate":
            model.generate({"group_id": "stim"}, n_cells=2, **kwargs, **FAST)
        else:
            model.predict(ctrl_cells, perturbation="stim", **kwargs, **FAST)
    assert_names(info, *needles)


@pytest.mark.parametrize("value", [0, -1.0, float("nan")])
def test_predict_encode_sigma_must_be_positive(model, ctrl_cells, value):
    """0 used to mean "the largest level" silently."""
    with pytest.raises(InputError) as info:
        model.predict(ctrl_cells, perturbation="stim", encode_sigma=value, **FAST)
    assert_names(info, "encode_sigma", "positive")


@pytest.mark.parametrize(
    ("kwargs", "needles"),
    [({}, ["perturbation or a target"]), ({"perturbation": "stim", "method": "ode"}, ["'ode'"])],
    ids=["no-target", "method"],
)
def test_predict_bad_arguments(model, ctrl_cells, kwargs, needles):
    with pytest.raises(InputError) as info:
        model.predict(ctrl_cells, **kwargs, **FAST)
    assert_names(info, *needles)


# ------------------------------------------------------------------ configuration
@pytest.mark.parametrize(
    ("make", "needles"),
    [
        (lambda: PreprocessConfig(scaling="bogus"), ["scaling='bogus'", "zscore"]),
        (lambda: PreprocessConfig(input="raw"), ["input='raw'", "lognorm"]),
        (lambda: PreprocessConfig(target_sum=0), ["target_sum", "got 0"]),
        (lambda: PreprocessConfig(min_std=-0.1), ["min_std", "-0.1"]),
        (lambda: PreprocessConfig(n_top_genes=0), ["n_top_genes", "got 0"]),
        (lambda: NetworkConfig(width=0), ["width must be positive", "got 0"]),
        (lambda: NetworkConfig(depth=-1), ["depth", "-1"]),
        (lambda: NetworkConfig(emb_dim=0), ["emb_dim", "got 0"]),
        (lambda: NetworkConfig(dropout=1.0), ["dropout", "1.0"]),
        (lambda: DiffusionConfig(sigma_min=10.0, sigma_max=1.0), ["sigma_min", "sigma_max"]),
        (lambda: DiffusionConfig(sigma_data=0.0), ["sigma_data", "0.0"]),
        (lambda: ModelConfig(p_drop=1.5), ["p_drop", "1.5"]),
        (lambda: TrainConfig(max_steps=0), ["max_steps", "got 0"]),
        (lambda: TrainConfig(lr=-1e-3), ["lr", "-0.001"]),
        (lambda: TrainConfig(ema_decay=1.0), ["ema_decay", "1.0"]),
    ],
)
def test_invalid_config_values(make, needles):
    with pytest.raises(InputError) as info:
        make()
    assert_names(info, *needles)


# ------------------------------------------------------------------ checkpoints
def _write(path, name: str, text: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / name).write_text(text)


@pytest.mark.parametrize(
    ("make", "needles"),
    [
        (lambda p: p.mkdir(), ["is not an rnadiff checkpoint", "no config.json"]),
        (lambda p: None, ["is not an rnadiff checkpoint"]),
        (lambda p: _write(p, "config.json", '{"model_type": "bert"}'), ["format None"]),
        (lambda p: _write(p.parent, p.name, "weights"), ["is not an rnadiff checkpoint"]),
    ],
    ids=["empty-folder", "missing-path", "foreign-config", "a-file"],
)
def test_load_something_that_is_not_a_checkpoint(tmp_path, make, needles):
    path = tmp_path / "not_a_model"
    make(path)
    with pytest.raises(InputError) as info:
        RNADiffusion.load(path)
    assert_names(info, str(path), *needles)


def test_load_incomplete_checkpoint(model, tmp_path):
    path = tmp_path / "model"
    model.save(path)
    (path / "weights.safetensors").unlink()
    with pytest.raises(InputError) as info:
        RNADiffusion.load(path)
    assert_names(info, "incomplete", "weights.safetensors")


def test_load_checkpoint_with_corrupt_config(model, tmp_path):
    path = tmp_path / "model"
    model.save(path)
    text = (path / "config.json").read_text()
    (path / "config.json").write_text(text[: len(text) // 2])  # truncated
    with pytest.raises(InputError) as info:
        RNADiffusion.load(path)
    assert_names(info, "config.json")


def test_load_with_adata_lacking_genes(model, kang_small, tmp_path):
    model.save(tmp_path / "model")
    dropped = model.genes[:3]
    adata = kang_small[:, ~kang_small.var_names.isin(dropped)].copy()
    with pytest.raises(InputError) as info:
        RNADiffusion.load(tmp_path / "model", adata=adata)
    assert_names(info, "3 of the model's 100 genes", "missing from adata", sorted(dropped)[0])


def test_load_with_adata_of_unknown_covariate_values(model, kang_small, tmp_path):
    model.save(tmp_path / "model")
    kang_small.obs["group_id"] = kang_small.obs["group_id"].cat.rename_categories(
        {"stim": "IFN-beta"}
    )
    with pytest.raises(InputError) as info:
        RNADiffusion.load(tmp_path / "model", adata=kang_small)
    assert_names(info, "'IFN-beta'", "'group_id'")


def test_loaded_model_without_data_cannot_train(model, tmp_path):
    model.save(tmp_path / "model")
    loaded = RNADiffusion.load(tmp_path / "model")
    with pytest.raises(InputError) as info:
        loaded.train(max_steps=1, progress=False)
    assert_names(info, "adata=")


# ------------------------------------------------------------------ the user's data
def _snapshot(adata: ad.AnnData) -> dict:
    return {
        "X": dense(adata.X).copy(),
        "X_type": type(adata.X),
        "obs": adata.obs.copy(),
        "var": adata.var.copy(),
        "layers": {k: dense(v).copy() for k, v in adata.layers.items()},
        "uns": set(adata.uns),
    }


def test_user_anndata_is_left_unchanged(kang_small, tiny_model_config):
    before = _snapshot(kang_small)
    RNADiffusion.setup_anndata(kang_small, **KANG_SETUP, categorical_keys=["sample_id"])
    model = RNADiffusion(kang_small, config=tiny_model_config)
    model.train(max_steps=3, batch_size=64, progress=False)
    generated = model.generate({"group_id": "stim", "cluster_id": "B cells"}, n_cells=3, **FAST)
    predicted = model.predict(kang_small, perturbation="stim", **FAST)
    assert generated.n_obs == 3 and predicted.n_obs == kang_small.n_obs

    after = _snapshot(kang_small)
    assert after["X_type"] is before["X_type"]
    np.testing.assert_array_equal(after["X"], before["X"])
    pd.testing.assert_frame_equal(after["obs"], before["obs"])
    pd.testing.assert_frame_equal(after["var"], before["var"])
    assert after["layers"].keys() == before["layers"].keys()
    for name, values in before["layers"].items():
        np.testing.assert_array_equal(after["layers"][name], values)
    assert after["uns"] == before["uns"] | {"rnadiff_setup"}
    assert kang_small.uns["rnadiff_setup"]["perturbation_key"] == "group_id"


def test_setup_survives_an_h5ad_round_trip(kang_small, tiny_model_config, tmp_path):
    RNADiffusion.setup_anndata(kang_small, **KANG_SETUP, categorical_keys=["sample_id"])
    kang_small.write_h5ad(tmp_path / "data.h5ad")
    adata = ad.read_h5ad(tmp_path / "data.h5ad")
    model = RNADiffusion(adata, config=tiny_model_config)
    model.save(tmp_path / "model")
    loaded = RNADiffusion.load(tmp_path / "model", adata=adata)
    assert loaded.registry == model.registry
