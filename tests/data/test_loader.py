"""Minibatches read from the training matrix as given (dense, sparse, on disk), the block
shuffling of on-disk data, the condition table, and outputs written in chunks."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from rnadiff import ModelConfig, NetworkConfig, PreprocessConfig, RNADiffusion, TrainConfig
from rnadiff.data._expression import Source
from rnadiff.data._loader import BLOCK, CellMatrix, ConditionTable
from rnadiff.data._preprocessing import fit_preprocessing, log_expression, scale
from rnadiff.training._loop import POOL, _seeded, batch_indices, epoch_order

SETUP = {"perturbation_key": "group_id", "control": "ctrl", "cell_type_key": "cluster_id"}


@pytest.fixture(scope="module")
def on_disk(tmp_path_factory, _kang_small_session):
    """The Kang slice written to disk and opened backed (X stays in the file)."""
    path = tmp_path_factory.mktemp("loader") / "cells.h5ad"
    adata = _kang_small_session.copy()
    adata.X = sp.csr_matrix(adata.X)
    adata.write_h5ad(path)
    return path


@pytest.mark.parametrize("kind", ["dense", "sparse", "backed"])
def test_rows_are_the_preprocessed_cells(kang_small, on_disk, kind):
    state = fit_preprocessing(kang_small, config=PreprocessConfig(n_top_genes=80))
    expected = scale(log_expression(kang_small, state), state)
    adata = kang_small.copy()
    if kind == "dense":
        adata.X = np.asarray(adata.X.todense())
    elif kind == "backed":
        adata = ad.read_h5ad(on_disk, backed="r")
    data = CellMatrix.of(adata, state, Source())
    assert data.backed == (kind == "backed") and len(data) == kang_small.n_obs
    idx = np.random.default_rng(0).permutation(kang_small.n_obs)[:77]
    np.testing.assert_allclose(data.rows(idx).numpy(), expected[idx], rtol=1e-5, atol=1e-5)


def _float64_rows(X: np.ndarray, state, idx: np.ndarray) -> np.ndarray:
    """The model-space rows as preprocessing defines them, all in float64."""
    x = X[:, [state.input_genes.index(g) for g in state.genes]].astype(np.float64)
    if state.input_type == "counts":
        x = np.log1p(x * (state.target_sum / X.sum(1, dtype=np.float64))[:, None])
    return ((x - state.mean) / state.std)[idx]


LAYOUTS = ["csr", "csr with duplicates", "csc", "dense", "backed", "backed with duplicates"]
LAYOUTS += ["backed dense"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("genes", ["all", "some"])
@pytest.mark.parametrize("values", ["counts", "lognorm"])
def test_float32_rows_equal_the_float64_preprocessing(tmp_path, layout, genes, values):
    # every input gene modelled (no column indexing) or only some; counts or log values
    rng = np.random.default_rng(1)
    X = rng.poisson(rng.gamma(0.3, 4.0, size=60), size=(300, 60)).astype(np.float32)
    X[0] += 1  # every gene has a count, so "all" models every one
    if genes == "some":
        X[:, 3] = 0  # a gene never seen is never modelled
    if values == "lognorm":
        X = np.log1p(X / X.sum(1, keepdims=True) * 1e4).astype(np.float32)
    adata = ad.AnnData(X.copy())
    adata.var_names = [f"g{i:02d}" for i in range(X.shape[1])]
    state = fit_preprocessing(adata, config=PreprocessConfig(n_top_genes=None))
    assert (len(state.genes) == X.shape[1]) == (genes == "all")
    if layout in ("csr with duplicates", "backed with duplicates"):  # scipy sums them
        m = sp.csr_matrix(X)  # each stored value split in two halves, side by side
        twice = (np.repeat(m.data / 2, 2), np.repeat(m.indices, 2), 2 * m.indptr)
        adata.X = sp.csr_matrix(twice, shape=X.shape)
        assert not adata.X.has_canonical_format
    elif layout in ("csr", "backed"):
        adata.X = sp.csr_matrix(X)
    elif layout == "csc":
        adata.X = sp.csc_matrix(X)
    if layout.startswith("backed"):
        adata.write_h5ad(tmp_path / "x.h5ad")
        adata = ad.read_h5ad(tmp_path / "x.h5ad", backed="r")
    data = CellMatrix.of(adata, state, Source())
    assert data.backed == layout.startswith("backed")
    idx = rng.permutation(len(X))[:97]
    rows = data.rows(idx)
    assert rows.dtype == torch.float32 and rows.shape == (97, len(state.genes))
    expected = _float64_rows(X.astype(np.float64), state, idx)
    np.testing.assert_allclose(rows.numpy(), expected, rtol=1e-5, atol=1e-5)
    # a cell asked for twice, cells of one block only, and no cell at all
    again = np.array([5, 5, 299, 0])
    np.testing.assert_allclose(
        data.rows(again).numpy(), _float64_rows(X.astype(np.float64), state, again),
        rtol=1e-5, atol=1e-5,
    )  # fmt: skip
    assert data.rows(np.zeros(0, dtype=np.int64)).shape == (0, len(state.genes))


def test_block_shuffling_visits_every_cell_once_reading_few_blocks():
    n, batch = 10_000, 128
    order = epoch_order(n, 0, 3, BLOCK)
    assert sorted(order.tolist()) == list(range(n))  # an epoch is a permutation
    assert not torch.equal(order, epoch_order(n, 0, 4, BLOCK))  # a new one each epoch
    blocks = [len(set((order[i : i + batch] // BLOCK).tolist())) for i in range(0, n, batch)]
    assert max(blocks) <= POOL  # a minibatch comes from one pool of blocks (two at a seam)
    # without blocks: a plain permutation, the same as before block shuffling existed
    gen = _seeded(0, 1, 0)  # epoch 0 of seed 0
    assert torch.equal(batch_indices(0, n, batch, seed=0), torch.randperm(n, generator=gen)[:batch])


def test_the_epoch_order_is_computed_once_per_epoch():
    epoch_order.cache_clear()
    for step in range(50):
        batch_indices(step, 100_000, 128, seed=1)
    assert epoch_order.cache_info().misses == 1


def test_condition_table_equals_encoding_every_cell(kang_small):
    RNADiffusion.setup_anndata(kang_small, **SETUP)
    model = RNADiffusion(
        kang_small, config=ModelConfig(network=NetworkConfig(width=16, depth=1, emb_dim=8))
    )
    table = ConditionTable(model.registry, kang_small.obs)
    assert len(table.table["group_id"]) == 10  # 5 cell types x 2 conditions
    idx = np.arange(0, kang_small.n_obs, 7)
    full = model.registry.encode(kang_small.obs)
    for key, value in table.rows(idx).items():
        np.testing.assert_array_equal(value.numpy(), full[key][idx])


def test_a_model_trains_on_cells_that_stay_on_disk(on_disk):
    adata = ad.read_h5ad(on_disk, backed="r")
    RNADiffusion.setup_anndata(adata, **SETUP)
    config = ModelConfig(network=NetworkConfig(width=16, depth=1, emb_dim=8))
    model = RNADiffusion(adata, config=config)
    cfg = TrainConfig(max_steps=20, calibration_cells=16, spread_cells=16)
    model.train(config=cfg, progress=False)
    assert model.step == 20 and np.isfinite(model.history[-1]["loss"])
    cells = ad.read_h5ad(on_disk)[:30]
    pred = model.predict(cells, perturbation="stim", steps=4, progress=False)
    assert pred.shape == (30, cells.n_vars) and np.isfinite(pred.X).all()


def test_chunked_outputs_hold_every_cell(kang_small, on_disk, tmp_path):
    from typer.testing import CliRunner

    from rnadiff.cli import app

    RNADiffusion.setup_anndata(kang_small, **SETUP)
    config = ModelConfig(network=NetworkConfig(width=16, depth=1, emb_dim=8))
    model = RNADiffusion(kang_small, config=config)
    model.train(config=TrainConfig(max_steps=5, calibration_cells=0, spread_cells=0))
    model.save(tmp_path / "m")
    runner = CliRunner()
    gen = ["generate", "--model", tmp_path / "m", "--condition", "group_id=stim"]
    gen += ["--n", 45, "--chunk-cells", 20, "--steps", 3, "--quiet", "--out", tmp_path / "g.h5ad"]
    result = runner.invoke(app, [str(a) for a in gen], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    cells = ad.read_h5ad(tmp_path / "g.h5ad")
    assert cells.shape == (45, kang_small.n_vars) and cells.obs_names.is_unique
    assert cells.uns["rnadiff"]["chunked"] == 20 and cells.uns["log1p"] == {"base": None}
    pred = ["predict", "--model", tmp_path / "m", "--source", on_disk, "--where", "group_id=ctrl"]
    pred += ["--perturbation", "stim", "--steps", 3, "--no-spread", "--quiet"]
    for name, extra in (("chunked", ["--chunk-cells", 33, "--backed"]), ("whole", [])):
        args = [*pred, *extra, "--out", tmp_path / f"{name}.h5ad"]
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    chunked, whole = (ad.read_h5ad(tmp_path / f"{n}.h5ad") for n in ("chunked", "whole"))
    assert list(chunked.obs_names) == list(whole.obs_names)
    np.testing.assert_allclose(chunked.X, whole.X, rtol=1e-5, atol=1e-6)
