"""Checkpoints: safetensors + JSON folders, written atomically; model and optimizer round trips."""

from __future__ import annotations

import errno
import json
import os

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open

import rnadiff.training._checkpoint as checkpoint_module
from rnadiff import InputError, ModelConfig, NetworkConfig, PreprocessConfig, RNADiffusion
from rnadiff.training import load_checkpoint, save_checkpoint
from rnadiff.training._checkpoint import optimizer_from_tensors, optimizer_to_tensors

pytestmark = pytest.mark.usefixtures("one_thread")


def _tensors(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {
        "weights": {
            "layer.weight": torch.randn(4, 3, generator=gen),
            "layer.transposed": torch.randn(3, 5, generator=gen).T,  # not contiguous
            "counts": torch.randint(0, 100, (6,), generator=gen),
            "scalar": torch.tensor(2.5, dtype=torch.float64),
            "grad": torch.randn(2, generator=gen, requires_grad=True),
        },
        "trainer": {"exp_avg": torch.randn(7, generator=gen)},
    }


META = {"name": "test", "nested": {"numbers": [1, 2.5, None], "flag": True}, "step": 12}


def _assert_tensors_equal(got, expected):
    assert got.keys() == expected.keys()
    for group in expected:
        assert got[group].keys() == expected[group].keys()
        for key, value in expected[group].items():
            assert got[group][key].dtype == value.dtype, key
            assert torch.equal(got[group][key], value.detach()), key


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------ round trip


def test_round_trip_of_tensors_and_meta(tmp_path):
    tensors = _tensors()
    save_checkpoint(tmp_path / "ckpt", META, tensors)
    meta, loaded = load_checkpoint(tmp_path / "ckpt")

    _assert_tensors_equal(loaded, tensors)
    assert {k: meta[k] for k in META} == META
    assert meta["files"] == ["trainer", "weights"]


def test_save_creates_missing_parent_folders(tmp_path):
    path = tmp_path / "a" / "b" / "ckpt"
    save_checkpoint(path, META, _tensors())
    _assert_tensors_equal(load_checkpoint(path)[1], _tensors())


def test_files_are_safetensors_and_json_only(tmp_path):
    save_checkpoint(tmp_path / "ckpt", META, _tensors())
    folder = tmp_path / "ckpt"

    assert _listing(folder) == [
        "config.json",
        "manifest.json",
        "trainer.safetensors",
        "weights.safetensors",
    ]
    json.loads((folder / "config.json").read_text())
    manifest = json.loads((folder / "manifest.json").read_text())
    assert sorted(manifest["files"]) == [
        "config.json",
        "trainer.safetensors",
        "weights.safetensors",
    ]
    for file in folder.glob("*.safetensors"):
        head = file.read_bytes()[:2]
        assert head[:1] != b"\x80", f"{file.name} looks like a pickle"
        assert head != b"PK", f"{file.name} looks like a torch zip archive"
        with safe_open(file, framework="pt") as fh:
            assert list(fh.keys())


# ------------------------------------------------------------------------------- atomicity


def test_no_temporary_folders_are_left_behind(tmp_path):
    save_checkpoint(tmp_path / "ckpt", META, _tensors())
    save_checkpoint(tmp_path / "ckpt", META, _tensors(seed=1))
    assert _listing(tmp_path) == ["ckpt"]


def test_overwriting_replaces_the_whole_checkpoint(tmp_path):
    path = tmp_path / "ckpt"
    save_checkpoint(path, {**META, "step": 1}, _tensors(seed=0))
    new = {"weights": _tensors(seed=1)["weights"]}  # fewer groups than before
    save_checkpoint(path, {**META, "step": 2}, new)

    meta, loaded = load_checkpoint(path)
    assert meta["step"] == 2
    _assert_tensors_equal(loaded, new)
    assert not (path / "trainer.safetensors").exists(), "stale files of the old checkpoint"


@pytest.mark.parametrize("fail_at", [1, 2])
def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, fail_at):
    path = tmp_path / "ckpt"
    save_checkpoint(path, {**META, "step": 1}, _tensors(seed=0))
    real_save_file = checkpoint_module.save_file
    calls = []

    def failing_save_file(tensors, filename, *args, **kwargs):
        calls.append(filename)
        if len(calls) == fail_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save_file(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "save_file", failing_save_file)
    with pytest.raises(InputError, match=r"disk full .* the previous checkpoint is intact"):
        save_checkpoint(path, {**META, "step": 2}, _tensors(seed=1))

    meta, loaded = load_checkpoint(path)
    assert meta["step"] == 1
    _assert_tensors_equal(loaded, _tensors(seed=0))
    assert _listing(tmp_path) == ["ckpt"], "temporary folder left behind"


def test_a_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    def failing_save_file(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module, "save_file", failing_save_file)
    with pytest.raises(InputError, match=r"disk full .* nothing was written"):
        save_checkpoint(tmp_path / "ckpt", META, _tensors())
    assert _listing(tmp_path) == []


def test_a_failed_swap_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt"
    save_checkpoint(path, {**META, "step": 1}, _tensors(seed=0))
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if ".tmp-" in os.fspath(src):  # the new folder's rename into place fails
            raise OSError("rename failed")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.os, "replace", replace)
    with pytest.raises(InputError, match="rename failed; the previous checkpoint is intact"):
        save_checkpoint(path, {**META, "step": 2}, _tensors(seed=1))
    monkeypatch.undo()

    meta, _ = load_checkpoint(path)
    assert meta["step"] == 1


def test_save_succeeds_despite_a_stale_folder_of_an_earlier_crash(tmp_path):
    path = tmp_path / "ckpt"
    save_checkpoint(path, {**META, "step": 1}, _tensors(seed=0))
    stale = tmp_path / f".ckpt.old-{os.getpid()}"
    stale.mkdir()
    (stale / "weights.safetensors").write_bytes(b"half deleted")

    save_checkpoint(path, {**META, "step": 2}, _tensors(seed=1))

    assert load_checkpoint(path)[0]["step"] == 2


# ------------------------------------------------------------------------------ bad input


def test_load_rejects_a_folder_that_is_not_a_checkpoint(tmp_path):
    with pytest.raises(InputError, match="not an rnadiff checkpoint"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(InputError, match="not an rnadiff checkpoint"):
        load_checkpoint(tmp_path)


def test_load_rejects_incomplete_and_newer_checkpoints(tmp_path):
    path = tmp_path / "ckpt"
    save_checkpoint(path, META, _tensors())
    (path / "trainer.safetensors").unlink()
    with pytest.raises(InputError, match="incomplete"):
        load_checkpoint(path)

    save_checkpoint(path, META, _tensors())
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(InputError, match="newer"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate weights", "weights.safetensors is corrupt or was edited"),
        ("edit config", "config.json is corrupt or was edited"),
        ("path in manifest", "not a plain file name"),
        ("manifest not json", "manifest.json is corrupt"),
        ("pickle instead of weights", "weights.safetensors is corrupt or was edited"),
    ],
)
def test_damaged_checkpoints_are_one_clear_error(tmp_path, damage, message):
    path = tmp_path / "ckpt"
    save_checkpoint(path, META, _tensors())
    weights = path / "weights.safetensors"
    if damage == "truncate weights":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "edit config":
        meta = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**meta, "step": 99}))
    elif damage == "path in manifest":
        manifest = json.loads((path / "manifest.json").read_text())
        manifest["files"]["../outside.json"] = "0" * 64
        (path / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "manifest not json":
        (path / "manifest.json").write_text("{not json")
    else:
        import pickle

        weights.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(InputError, match=message):
        load_checkpoint(path)


def test_a_folder_of_the_users_is_never_replaced(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "train.h5ad").write_bytes(b"the user's data")
    with pytest.raises(InputError, match="not an rnadiff model"):
        save_checkpoint(folder, META, _tensors())
    assert (folder / "train.h5ad").read_bytes() == b"the user's data"
    save_checkpoint(tmp_path / "model", META, _tensors())
    (tmp_path / "model" / "notes.txt").write_text("mine")  # a checkpoint holding a user file
    with pytest.raises(InputError, match="also holds other files"):
        save_checkpoint(tmp_path / "model", META, _tensors(seed=1))
    assert (tmp_path / "model" / "notes.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    save_checkpoint(empty, META, _tensors())  # an empty folder is fine
    assert load_checkpoint(empty)[0]["step"] == 12


# --------------------------------------------------------------------------- optimizer state


def _make_optimizer(kind, params):
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=1e-2, weight_decay=1e-3)
    if kind == "adam_amsgrad":
        return torch.optim.Adam(params, lr=1e-2, amsgrad=True)
    return torch.optim.SGD(params, lr=1e-2, momentum=0.9)


def _train(model, optimizer, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(8, 4, generator=gen)
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("kind", ["adamw", "adam_amsgrad", "sgd_momentum"])
def test_optimizer_state_round_trip(tmp_path, kind):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    optimizer = _make_optimizer(kind, model.parameters())
    _train(model, optimizer, steps=3, seed=1)

    meta, tensors = optimizer_to_tensors(optimizer)
    save_checkpoint(tmp_path / "ckpt", {"optimizer": meta}, {"optimizer": tensors})
    loaded_meta, loaded = load_checkpoint(tmp_path / "ckpt")

    clone = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    clone.load_state_dict(model.state_dict())
    restored = _make_optimizer(kind, clone.parameters())
    restored.load_state_dict(optimizer_from_tensors(loaded_meta["optimizer"], loaded["optimizer"]))

    original_state = optimizer.state_dict()["state"]
    restored_state = restored.state_dict()["state"]
    assert original_state.keys() == restored_state.keys()
    for pid, values in original_state.items():
        assert values.keys() == restored_state[pid].keys()
        for name, value in values.items():
            assert torch.equal(torch.as_tensor(restored_state[pid][name]), torch.as_tensor(value))

    # Continuing from the restored state is the same as continuing the original.
    _train(model, optimizer, steps=3, seed=2)
    _train(clone, restored, steps=3, seed=2)
    for a, b in zip(model.parameters(), clone.parameters(), strict=True):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------- model round trip


@pytest.fixture(scope="module")
def adata() -> ad.AnnData:
    """Synthetic counts: two cell types, a stimulus that raises some genes, and a dose."""
    rng = np.random.default_rng(0)
    n, genes = 120, 30
    cell_type = np.where(np.arange(n) % 2 == 0, "A", "B")
    condition = np.where(np.arange(n) % 3 == 0, "ctrl", "stim")
    rate = rng.gamma(2.0, 2.0, size=genes)[None, :].repeat(n, axis=0)
    rate[cell_type == "B", :10] *= 3
    rate[condition == "stim", 10:15] *= 4
    counts = rng.poisson(rate).astype(np.float32)
    obs = pd.DataFrame(
        {
            "condition": pd.Categorical(condition),
            "cell_type": pd.Categorical(cell_type),
            "dose": np.where(condition == "ctrl", 0.0, rng.uniform(1, 100, n)),
        },
        index=[f"cell{i}" for i in range(n)],
    )
    data = ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(genes)]))
    RNADiffusion.setup_anndata(
        data,
        perturbation_key="condition",
        control="ctrl",
        cell_type_key="cell_type",
        dose_key="dose",
    )
    return data


@pytest.fixture(scope="module")
def trained(adata) -> RNADiffusion:
    torch.manual_seed(0)
    config = ModelConfig(
        preprocess=PreprocessConfig(n_top_genes=20),
        network=NetworkConfig(width=32, depth=1, emb_dim=16),
    )
    # A few steps with a large learning rate: weights and EMA far from their initial values.
    return RNADiffusion(adata, config=config).train(
        max_steps=10, batch_size=32, lr=1e-2, progress=False
    )


def test_model_files_are_safetensors_and_json_only(trained, tmp_path):
    trained.save(tmp_path / "model")
    files = _listing(tmp_path / "model")
    assert files == ["config.json", "manifest.json", "trainer.safetensors", "weights.safetensors"]
    assert _listing(tmp_path) == ["model"]


def test_model_round_trip_restores_weights_and_state(trained, tmp_path):
    trained.save(tmp_path / "model")
    loaded = RNADiffusion.load(tmp_path / "model")

    for a, b in ((trained.denoiser, loaded.denoiser), (trained.ema, loaded.ema)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert loaded.genes == trained.genes
    assert loaded.step == trained.step == 10
    assert loaded.history == trained.history
    assert loaded.config == trained.config
    assert loaded.train_config == trained.train_config
    assert loaded.registry == trained.registry
    np.testing.assert_array_equal(loaded.preprocess.mean, trained.preprocess.mean)
    np.testing.assert_array_equal(loaded.preprocess.std, trained.preprocess.std)
    # Without training data the loaded model can sample but not train.
    with pytest.raises(InputError, match="no training data"):
        loaded.train(max_steps=11, progress=False)


@pytest.mark.parametrize("sampler", ["heun", "dpmpp_2m"])
def test_loaded_model_generates_identical_cells(trained, tmp_path, sampler):
    trained.save(tmp_path / "model")
    loaded = RNADiffusion.load(tmp_path / "model")
    conditions = [{"condition": "stim", "cell_type": "A", "dose": 10.0}, {"condition": "ctrl"}]
    kwargs = {"n_cells": 8, "sampler": sampler, "steps": 8, "seed": 3, "progress": False}

    before = trained.generate(conditions, guidance=1.5, **kwargs)
    after = loaded.generate(conditions, guidance=1.5, **kwargs)

    assert after.shape == (16, 30)  # every gene: 20 modelled, 10 at their condition's mean
    assert np.array_equal(before.X, after.X)
    pd.testing.assert_frame_equal(before.obs, after.obs)
    assert list(after.var_names) == list(trained.adata.var_names)
    assert after.var["rnadiff_modelled"].sum() == 20
    other_seed = loaded.generate(conditions, guidance=1.5, **{**kwargs, "seed": 4})
    assert not np.array_equal(other_seed.X, after.X), "the seed must matter"


@pytest.mark.parametrize("method", ["counterfactual", "generate"])
def test_loaded_model_predicts_identical_cells(trained, adata, tmp_path, method):
    trained.save(tmp_path / "model")
    loaded = RNADiffusion.load(tmp_path / "model")
    source = adata[adata.obs["condition"] == "ctrl"][:12].copy()
    kwargs = {"perturbation": "stim", "method": method, "steps": 8, "seed": 1, "progress": False}

    before = trained.predict(source, **kwargs)
    after = loaded.predict(source, **kwargs)

    assert after.shape == (12, 30)
    assert np.array_equal(before.X, after.X)
    assert list(after.obs_names) == list(source.obs_names)
    assert (after.obs["condition"] == "stim").all()


def test_an_ensemble_trains_every_member_and_round_trips(adata, tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(
        preprocess=PreprocessConfig(n_top_genes=20),
        network=NetworkConfig(width=32, depth=1, emb_dim=16, n_models=2),
    )
    model = RNADiffusion(adata, config=config)
    start = [m.proj_out.weight.clone() for m in model.denoiser.net.members]
    model.train(max_steps=10, batch_size=32, lr=1e-2, progress=False)
    after = [m.proj_out.weight for m in model.denoiser.net.members]
    # every member learned (its output layer starts at zero), and each its own weights
    assert all(not torch.equal(a, b) for a, b in zip(start, after, strict=True))
    assert not torch.equal(after[0], after[1])

    model.save(tmp_path / "model")
    loaded = RNADiffusion.load(tmp_path / "model")
    assert loaded.config.network.n_models == 2
    assert len(loaded.ema.net.members) == 2
    source = adata[adata.obs["condition"] == "ctrl"][:12].copy()
    kwargs = {"perturbation": "stim", "steps": 8, "seed": 1, "progress": False}
    assert np.array_equal(model.predict(source, **kwargs).X, loaded.predict(source, **kwargs).X)
