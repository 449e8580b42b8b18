"""Tests of rnadiff.data._preprocessing on slices of the real data sets."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from rnadiff import PreprocessConfig
from rnadiff.data._preprocessing import (
    detect_input_type,
    fit_preprocessing,
    highly_variable_genes,
    log_expression,
    prepare_anndata,
    scale,
    unscale,
)

TRAPNELL_FILE = "trapnell2014_hsmm_timecourse_fpkm.h5ad"


def dense(X) -> np.ndarray:
    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)


def reference_log_normalize(counts: np.ndarray, target_sum: float) -> np.ndarray:
    """log1p(counts scaled to ``target_sum`` per cell), written out independently."""
    totals = counts.sum(axis=1, keepdims=True)
    return np.log1p(counts / totals * target_sum)


def assert_same_anndata(a: ad.AnnData, b: ad.AnnData) -> None:
    """Same X, obs, var, layers, names and uns keys (values compared exactly)."""
    assert type(a.X) is type(b.X)
    np.testing.assert_array_equal(dense(a.X), dense(b.X))
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(a.var, b.var)
    assert set(a.layers) == set(b.layers)
    for name in a.layers:
        np.testing.assert_array_equal(dense(a.layers[name]), dense(b.layers[name]))
    assert set(a.uns) == set(b.uns)


@pytest.fixture(scope="module")
def _trapnell_session(data_file) -> ad.AnnData:
    backed = ad.read_h5ad(data_file(TRAPNELL_FILE), backed="r")
    cells = backed[:30].to_memory()
    backed.file.close()
    mean = np.asarray(cells.X.mean(axis=0)).ravel()
    genes = np.sort(np.argsort(-mean, kind="stable")[:400])
    return cells[:, genes].copy()


@pytest.fixture
def trapnell_fpkm(_trapnell_session) -> ad.AnnData:
    """30 HSMM cells x the 400 genes of highest mean FPKM (non-integers up to ~19000)."""
    return _trapnell_session.copy()


# ------------------------------------------------------------------ input detection
@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("kang X (sparse counts)", "counts"),
        ("kang X (dense counts)", "counts"),
        ("kang logcounts", "lognorm"),
        ("norman X", "lognorm"),
        ("norman counts", "counts"),
        ("trapnell FPKM", "normalized"),
    ],
)
def test_detect_input_type(request, source, expected):
    if source.startswith("kang"):
        adata = request.getfixturevalue("kang_small")
        X = {
            "kang X (sparse counts)": adata.X,
            "kang X (dense counts)": dense(adata.X).astype(np.float32),
            "kang logcounts": adata.layers["logcounts"],
        }[source]
    elif source.startswith("norman"):
        adata = request.getfixturevalue("norman_tiny")
        X = adata.X if source == "norman X" else adata.layers["counts"]
    else:
        X = request.getfixturevalue("trapnell_fpkm").X
    assert detect_input_type(X) == expected


def test_detect_input_type_single_values_decide(kang_small):
    counts = dense(kang_small.X)
    counts[0, np.flatnonzero(counts[0])[0]] += 0.5  # one fractional value: no longer counts
    assert detect_input_type(counts) == "normalized"  # counts go far above 30
    logs = dense(kang_small.layers["logcounts"])
    assert detect_input_type(logs) == "lognorm"
    logs[3, 3] = 30.5  # one value beyond any log-normalized value
    assert detect_input_type(logs) == "normalized"


# ------------------------------------------------------------------ normalization
@pytest.mark.parametrize("target_sum", [1e4, 1e6])
@pytest.mark.parametrize("dataset", ["kang_small", "trapnell_fpkm"])
def test_normalization_sums_to_target(request, dataset, target_sum):
    adata = request.getfixturevalue(dataset)
    state = fit_preprocessing(
        adata, config=PreprocessConfig(n_top_genes=None, target_sum=target_sum)
    )
    assert state.input_type == ("counts" if dataset == "kang_small" else "normalized")
    log_x = log_expression(adata, state)
    assert log_x.shape == adata.shape
    np.testing.assert_allclose(
        np.expm1(log_x.astype(np.float64)).sum(axis=1), target_sum, rtol=1e-4
    )
    expected = reference_log_normalize(dense(adata.X), target_sum)
    np.testing.assert_allclose(log_x, expected, rtol=1e-5, atol=1e-5)


def test_lognorm_values_are_used_as_they_are(norman_tiny):
    state = fit_preprocessing(norman_tiny, config=PreprocessConfig(n_top_genes=20))
    log_x = log_expression(norman_tiny, state)
    expected = dense(norman_tiny[:, list(state.genes)].X)
    np.testing.assert_array_equal(log_x, expected)


# ------------------------------------------------------------ highly variable genes
@pytest.mark.parametrize("n_top", [40, 150])
def test_hvg_matches_scanpy_seurat_flavor(kang_small, n_top):
    sc = pytest.importorskip("scanpy")
    log_x = reference_log_normalize(dense(kang_small.X), 1e4).astype(np.float32)
    ours = highly_variable_genes(log_x, n_top)
    assert len(ours) == n_top and np.all(np.diff(ours) > 0)  # unique, in gene order
    ref = ad.AnnData(X=log_x, var=pd.DataFrame(index=kang_small.var_names))
    sc.pp.highly_variable_genes(ref, flavor="seurat", n_top_genes=n_top)
    assert set(kang_small.var_names[ours]) == set(ref.var_names[ref.var["highly_variable"]])


def test_hvg_selection_uses_only_the_cells_given(kang_small):
    config = PreprocessConfig(n_top_genes=60)
    on_all = fit_preprocessing(kang_small, config=config)
    ctrl = kang_small[kang_small.obs["group_id"] == "ctrl"]
    on_ctrl = fit_preprocessing(ctrl, config=config)
    assert set(on_all.genes) != set(on_ctrl.genes)
    # the stimulated cells play no part in a fit on the control cells: scrambling them
    # changes nothing
    scrambled = kang_small.copy()
    stim = np.flatnonzero(scrambled.obs["group_id"] == "stim")
    X = dense(scrambled.X)
    X[stim] = np.random.default_rng(1).poisson(3.0, size=X[stim].shape)
    scrambled.X = sp.csr_matrix(X.astype(np.float32))
    again = fit_preprocessing(scrambled[scrambled.obs["group_id"] == "ctrl"], config=config)
    assert again.genes == on_ctrl.genes
    np.testing.assert_array_equal(again.mean, on_ctrl.mean)
    np.testing.assert_array_equal(again.std, on_ctrl.std)
    # gene scales are the statistics of the training cells' log values
    log_ctrl = log_expression(ctrl, on_ctrl)
    np.testing.assert_allclose(on_ctrl.mean, log_ctrl.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        on_ctrl.std, np.maximum(log_ctrl.std(axis=0), config.min_std), rtol=1e-5
    )


def test_genes_expressed_only_in_held_out_cells_are_never_selected(kang_small):
    held_out = (kang_small.obs["group_id"] == "stim").to_numpy()
    counts = dense(kang_small.X)
    # 30 new genes: copies of the most variable genes of the held-out cells, zero elsewhere
    log_held = reference_log_normalize(counts[held_out], 1e4)
    source = np.argsort(-log_held.var(axis=0), kind="stable")[:30]
    spikes = counts[:, source].copy()
    spikes[~held_out] = 0
    names = [*kang_small.var_names, *(f"heldout_{g}" for g in kang_small.var_names[source])]
    full = ad.AnnData(
        X=sp.csr_matrix(np.hstack([counts, spikes]).astype(np.float32)),
        obs=kang_small.obs.copy(),
        var=pd.DataFrame(index=names),
    )
    config = PreprocessConfig(n_top_genes=100)

    def n_spikes(state):
        return sum(g.startswith("heldout_") for g in state.genes)

    assert n_spikes(fit_preprocessing(full, config=config)) > 0  # variable when they are seen
    assert n_spikes(fit_preprocessing(full[~held_out], config=config)) == 0


def test_silent_and_constant_genes_are_never_selected(kang_small):
    log_x = reference_log_normalize(dense(kang_small.X), 1e4).astype(np.float32)
    log_x[:, 5] = 0.0  # never expressed
    log_x[:, 7] = np.median(log_x[log_x > 0])  # constant, among many genes of its mean
    top = highly_variable_genes(log_x, kang_small.n_vars - 2)
    assert 5 not in top and 7 not in top
    np.testing.assert_array_equal(highly_variable_genes(log_x, 10_000), np.arange(log_x.shape[1]))


# ------------------------------------------------------------------ gene scaling
@pytest.mark.parametrize("scaling", ["zscore", "center"])
def test_scale_unscale_round_trip(kang_small, scaling):
    state = fit_preprocessing(kang_small, config=PreprocessConfig(n_top_genes=80, scaling=scaling))
    log_x = log_expression(kang_small, state)
    z = scale(log_x, state)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-4)
    if scaling == "zscore":
        wide = log_x.std(axis=0) > state.std.min() + 1e-3  # genes above the std floor
        np.testing.assert_allclose(z.std(axis=0)[wide], 1.0, rtol=1e-3)
    else:
        np.testing.assert_array_equal(state.std, 1.0)
        np.testing.assert_allclose(z, log_x - log_x.mean(axis=0), atol=1e-4)
    np.testing.assert_allclose(unscale(z, state), log_x, atol=1e-5)


def test_unscale_clips_at_zero(kang_small):
    state = fit_preprocessing(kang_small, config=PreprocessConfig(n_top_genes=80))
    z = np.full((3, len(state.genes)), -100.0, dtype=np.float32)
    np.testing.assert_array_equal(unscale(z, state), 0.0)


def test_std_floor_applies_only_to_genes_below_it(kang_small):
    config = PreprocessConfig(n_top_genes=None, min_std=0.6)
    state = fit_preprocessing(kang_small, config=config)
    raw_std = log_expression(kang_small, state).std(axis=0)
    floored = raw_std < 0.6
    assert 0 < floored.sum() < len(floored)
    np.testing.assert_allclose(state.std[floored], 0.6)
    np.testing.assert_allclose(state.std[~floored], raw_std[~floored], rtol=1e-5)


# --------------------------------------------------------- preprocessing new data
@pytest.mark.parametrize("source", ["counts", "lognorm"])
def test_log_expression_ignores_gene_order(kang_small, source):
    layer = None if source == "counts" else "logcounts"
    state = fit_preprocessing(kang_small, config=PreprocessConfig(n_top_genes=60), layer=layer)
    assert state.input_type == source
    expected = log_expression(kang_small, state, layer=layer)
    order = np.random.default_rng(3).permutation(kang_small.n_vars)
    shuffled = kang_small[:, order].copy()
    assert list(shuffled.var_names) != list(kang_small.var_names)
    np.testing.assert_array_equal(log_expression(shuffled, state, layer=layer), expected)


def _with_extra_genes(adata: ad.AnnData, extra: np.ndarray, layer: str | None) -> ad.AnnData:
    """``adata`` with genes reversed and ``extra.shape[1]`` new genes in front."""
    X = dense(adata.X if layer is None else adata.layers[layer])[:, ::-1]
    names = [f"extra{i}" for i in range(extra.shape[1])] + list(adata.var_names[::-1])
    out = ad.AnnData(X=sp.csr_matrix(np.hstack([extra, X]).astype(np.float32)))
    out.obs_names, out.var_names = adata.obs_names, names
    return out


def test_log_expression_ignores_extra_genes_of_lognorm_data(kang_small):
    state = fit_preprocessing(
        kang_small, config=PreprocessConfig(n_top_genes=60), layer="logcounts"
    )
    expected = log_expression(kang_small, state, layer="logcounts")
    extra = np.random.default_rng(0).uniform(0, 4, size=(kang_small.n_obs, 25))
    new = _with_extra_genes(kang_small, extra, "logcounts")
    np.testing.assert_array_equal(log_expression(new, state), expected)


def test_log_expression_of_counts_with_extra_silent_genes(kang_small, caplog):
    state = fit_preprocessing(kang_small, config=PreprocessConfig(n_top_genes=60))
    expected = log_expression(kang_small, state)
    new = _with_extra_genes(kang_small, np.zeros((kang_small.n_obs, 25)), None)
    with caplog.at_level(logging.WARNING, logger="rnadiff"):
        got = log_expression(new, state)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    # size factors use all genes of the data: a different gene count is warned about
    assert any("size factors use 325 genes" in r.getMessage() for r in caplog.records)


def test_log_expression_of_counts_with_the_training_genes_does_not_warn(kang_small, caplog):
    state = fit_preprocessing(kang_small, config=PreprocessConfig(n_top_genes=60))
    with caplog.at_level(logging.WARNING, logger="rnadiff"):
        log_expression(kang_small[:, ::-1].copy(), state)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# ------------------------------------------------------------------ prepare_anndata
@pytest.mark.parametrize("storage", ["sparse", "dense"])
def test_prepare_anndata_counts(kang_small, storage):
    if storage == "dense":
        kang_small.X = dense(kang_small.X).astype(np.float32)
    before = kang_small.copy()
    config = PreprocessConfig(n_top_genes=70)
    out = prepare_anndata(kang_small, config=config)

    assert out is not kang_small
    assert_same_anndata(kang_small, before)  # the user's object is untouched
    state = fit_preprocessing(before, config=config)
    genes = list(state.genes)
    assert list(out.var_names) == genes and out.n_obs == before.n_obs
    assert list(out.obs_names) == list(before.obs_names)
    counts = dense(before.X)
    kept = before.var_names.get_indexer(genes)
    np.testing.assert_array_equal(dense(out.layers["counts"]), counts[:, kept])
    expected = reference_log_normalize(counts, config.target_sum)[:, kept]  # all-gene totals
    np.testing.assert_allclose(dense(out.X), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.var["rnadiff_mean"], state.mean)
    np.testing.assert_allclose(out.var["rnadiff_std"], state.std)
    uns = out.uns["rnadiff_preprocessing"]
    assert uns["input_type"] == "counts" and list(uns["genes"]) == genes
    assert uns["target_sum"] == config.target_sum and uns["n_input_genes"] == before.n_vars
    # the copy owns its data: changing it leaves the input as it was
    out.layers["counts"][0, 0] = 12345
    out.obs["group_id"] = "changed"
    assert_same_anndata(kang_small, before)


def test_prepare_anndata_reads_the_given_layer(norman_tiny):
    before = norman_tiny.copy()
    out = prepare_anndata(norman_tiny, config=PreprocessConfig(n_top_genes=20), layer="counts")
    assert_same_anndata(norman_tiny, before)
    assert out.uns["rnadiff_preprocessing"]["input_type"] == "counts"
    counts = dense(before.layers["counts"])
    kept = before.var_names.get_indexer(list(out.var_names))
    np.testing.assert_array_equal(dense(out.layers["counts"]), counts[:, kept])
    expected = reference_log_normalize(counts, 1e4)[:, kept]
    np.testing.assert_allclose(dense(out.X), expected, rtol=1e-5, atol=1e-5)


def test_lognorm_input_is_detected_accepted_and_stated(norman_tiny, caplog):
    before = norman_tiny.copy()
    with caplog.at_level(logging.INFO, logger="rnadiff"):
        state = fit_preprocessing(norman_tiny, config=PreprocessConfig(n_top_genes=None))
    assert state.input_type == "lognorm"
    assert "log-normalized" in state.description
    assert any("adata.X holds log-normalized" in r.getMessage() for r in caplog.records)
    out = prepare_anndata(norman_tiny, config=PreprocessConfig(n_top_genes=None))
    assert out.uns["rnadiff_preprocessing"]["input_type"] == "lognorm"
    np.testing.assert_array_equal(dense(out.X), dense(before.X))
    assert_same_anndata(norman_tiny, before)


@pytest.mark.parametrize(("declared", "detected"), [("auto", "counts"), ("lognorm", "lognorm")])
def test_declared_input_type_overrides_detection(norman_tiny, declared, detected):
    state = fit_preprocessing(
        norman_tiny, config=PreprocessConfig(input=declared, n_top_genes=None), layer="counts"
    )
    assert state.input_type == detected
