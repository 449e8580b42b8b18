"""Tests of rnadiff.data._preprocessing on slices of the real data sets."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from rnadiff import PreprocessConfig
from rnadiff._errors import InputError
from rnadiff.data._expression import choose_source
from rnadiff.data._genes import select_genes
from rnadiff.data._preprocessing import (
    PreprocessState,
    fit_preprocessing,
    log_expression,
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


# ------------------------------------------------------------------ input types
@pytest.mark.parametrize(
    ("source", "kind", "base"),
    [
        ("kang X (sparse counts)", "counts", "e"),
        ("kang X (dense counts)", "counts", "e"),
        ("kang logcounts", "lognorm", 2),  # scater's logNormCounts: log2(1 + x)
        ("norman X", "lognorm", "e"),
        ("trapnell FPKM", "normalized", "e"),
    ],
)
def test_fit_states_what_the_input_holds(request, source, kind, base, caplog):
    if source.startswith("kang"):
        adata = request.getfixturevalue("kang_small")
        if source == "kang X (dense counts)":
            adata.X = dense(adata.X).astype(np.float32)
        layer = "logcounts" if source == "kang logcounts" else None
    elif source.startswith("norman"):
        adata, layer = request.getfixturevalue("norman_tiny"), None
    else:
        adata, layer = request.getfixturevalue("trapnell_fpkm"), None
    with caplog.at_level(logging.INFO, logger="rnadiff"):
        state = fit_preprocessing(adata, config=PreprocessConfig(), layer=layer)
    assert (state.input_type, state.log_base) == (kind, base)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert {"counts": "counts", "lognorm": "Log-normalized", "normalized": "Normalized"}[
        kind
    ] in said


def test_log2_input_is_converted_to_natural_log(kang_small):
    state = fit_preprocessing(kang_small, config=PreprocessConfig(), layer="logcounts")
    got = log_expression(kang_small, state, layer="logcounts")
    expected = dense(kang_small[:, list(state.genes)].layers["logcounts"]) * np.log(2)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_an_undecidable_input_is_refused_naming_the_option(kang_small):
    logs = dense(kang_small.layers["logcounts"])
    adata = ad.AnnData(X=np.log2(1 + np.expm1(logs * np.log(2)) ** 1.3).astype(np.float32))
    with pytest.raises(InputError, match="input='lognorm'"):
        fit_preprocessing(adata, config=PreprocessConfig())
    state = fit_preprocessing(adata, config=PreprocessConfig(input="log2"))
    assert (state.input_type, state.log_base) == ("lognorm", 2)


def test_rounded_tpm_is_refused_as_ambiguous(kang_small):
    counts = dense(kang_small.X)
    tpm = np.round(counts / counts.sum(axis=1, keepdims=True) * 1e6)
    with pytest.raises(InputError, match="input='counts' or input='normalized'"):
        fit_preprocessing(ad.AnnData(X=tpm), config=PreprocessConfig())
    state = fit_preprocessing(ad.AnnData(X=tpm), config=PreprocessConfig(input="normalized"))
    assert state.input_type == "normalized" and state.depth is None


def test_declared_counts_must_be_integers(norman_tiny):
    with pytest.raises(InputError, match="non-integer"):
        fit_preprocessing(norman_tiny, config=PreprocessConfig(input="counts"))


def test_log_x_with_a_counts_layer_reads_the_counts(norman_tiny, caplog):
    with caplog.at_level(logging.INFO, logger="rnadiff"):
        source, info = choose_source(norman_tiny)
    assert source.layer == "counts" and info.kind == "counts"
    assert any("layers['counts']" in r.getMessage() for r in caplog.records)
    raw = ad.AnnData(X=norman_tiny.X.copy(), var=norman_tiny.var.copy())
    raw.raw = ad.AnnData(X=norman_tiny.layers["counts"], var=norman_tiny.var.copy())
    source, _ = choose_source(raw)
    assert source.use_raw
    assert choose_source(raw, layer=None, use_raw=False)[0].use_raw  # still the raw counts
    assert choose_source(norman_tiny, layer="counts")[0].layer == "counts"


@pytest.mark.parametrize("target_sum", [1e4, 1e6])
@pytest.mark.parametrize("dataset", ["kang_small", "trapnell_fpkm"])
def test_normalization_sums_to_target(request, dataset, target_sum):
    adata = request.getfixturevalue(dataset)
    state = fit_preprocessing(
        adata, config=PreprocessConfig(n_top_genes=None, target_sum=target_sum)
    )
    assert state.input_type == ("counts" if dataset == "kang_small" else "normalized")
    log_x = log_expression(adata, state, genes=list(adata.var_names))
    np.testing.assert_allclose(
        np.expm1(log_x.astype(np.float64)).sum(axis=1), target_sum, rtol=1e-4
    )
    expected = reference_log_normalize(dense(adata.X), target_sum)
    np.testing.assert_allclose(log_x, expected, rtol=1e-5, atol=1e-5)


def test_natural_log_input_is_used_as_it_is(norman_tiny):
    state = fit_preprocessing(norman_tiny, config=PreprocessConfig(n_top_genes=20))
    log_x = log_expression(norman_tiny, state)
    expected = dense(norman_tiny[:, list(state.genes)].X)
    np.testing.assert_allclose(log_x, expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("trained", "given", "message"),
    [("counts", "logcounts", "looks log-normalized"), ("logcounts", None, "holds raw counts")],
)
def test_new_data_of_another_kind_is_refused(kang_small, trained, given, message):
    layer = None if trained == "counts" else trained
    state = fit_preprocessing(kang_small, config=PreprocessConfig(), layer=layer)
    with pytest.raises(InputError, match=message):
        log_expression(kang_small, state, layer=given)


# ------------------------------------------------------------------ modelled genes
def test_every_expressed_gene_is_modelled_up_to_the_budget(kang_small, caplog):
    adata = kang_small.copy()
    X = dense(adata.X)
    X[:, 5] = 0  # never expressed: passes through, never modelled
    adata.X = sp.csr_matrix(X.astype(np.float32))
    with caplog.at_level(logging.INFO, logger="rnadiff"):
        state = fit_preprocessing(adata, config=PreprocessConfig())
    assert state.selection == "all"
    assert state.genes == tuple(g for i, g in enumerate(adata.var_names) if i != 5)
    assert state.input_genes == tuple(adata.var_names)
    assert any("modelling 299 of 300 genes" in r.getMessage() for r in caplog.records)


def test_above_the_budget_genes_are_chosen_by_pearson_residuals(kang_small, caplog):
    with caplog.at_level(logging.INFO, logger="rnadiff"):
        state = fit_preprocessing(kang_small, config=PreprocessConfig(n_top_genes=40))
    expected = kang_small.var_names[select_genes(kang_small.X, 40)]
    assert state.selection == "pearson_residuals" and state.genes == tuple(expected)
    assert any("the other 260 pass through" in r.getMessage() for r in caplog.records)


def test_given_genes_and_highly_variable_flags_are_honoured(kang_small):
    genes = (
        ("ISG15", "IFI6") if "ISG15" in kang_small.var_names else tuple(kang_small.var_names[:2])
    )
    state = fit_preprocessing(kang_small, config=PreprocessConfig(genes=genes))
    assert set(state.genes) == set(genes) and state.selection == "given"
    flagged = kang_small.copy()
    flagged.var["highly_variable"] = np.arange(flagged.n_vars) % 3 == 0
    state = fit_preprocessing(flagged, config=PreprocessConfig())
    assert state.selection == "highly_variable" and len(state.genes) == 100
    ignored = fit_preprocessing(flagged, config=PreprocessConfig(use_highly_variable=False))
    assert ignored.selection == "all"
    with pytest.raises(InputError, match="not in the data"):
        fit_preprocessing(kang_small, config=PreprocessConfig(genes=("NOPE",)))


def test_selection_uses_only_the_cells_given(kang_small):
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
    # extra log2-normalized genes (of other cells): the data stay log2 values
    extra = kang_small.layers["logcounts"][::-1, :25].toarray()
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


# ------------------------------------------------------------------ the scale of log values
def _lognorm_at(adata: ad.AnnData, target_sum: float, base: float = np.e) -> ad.AnnData:
    """``adata``'s counts as ``log_base(1 + x)`` of counts per ``target_sum`` (sparse)."""
    x = reference_log_normalize(dense(adata.X), target_sum) / np.log(base)
    out = ad.AnnData(X=sp.csr_matrix(x.astype(np.float32)), obs=adata.obs.copy())
    out.var_names = adata.var_names
    return out


def test_lognorm_training_records_its_scale(kang_small):
    state = fit_preprocessing(_lognorm_at(kang_small, 1e4), config=PreprocessConfig())
    assert state.log_total == pytest.approx(1e4, rel=1e-4)
    assert 0 < state.log_total_modelled <= state.log_total * (1 + 1e-6)
    assert state.scale == state.log_total
    again = PreprocessState.from_json(state.to_json(), state.mean, state.std)
    assert (again.log_total, again.log_total_modelled) == (
        state.log_total,
        state.log_total_modelled,
    )
    counts = fit_preprocessing(kang_small, config=PreprocessConfig())
    assert counts.log_total is None and counts.scale == 1e4


@pytest.mark.parametrize(("target_sum", "base"), [(1e6, 2.0), (1e3, np.e)])
def test_lognorm_data_of_another_scale_are_brought_to_the_models(
    kang_small, caplog, target_sum, base
):
    train = _lognorm_at(kang_small, 1e4)
    state = fit_preprocessing(train, config=PreprocessConfig(n_top_genes=60))
    expected = log_expression(train, state)
    with caplog.at_level(logging.WARNING, logger="rnadiff"):
        got = log_expression(_lognorm_at(kang_small, target_sum, base), state)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "rescaled to the model's scale" in said and f"x {1e4 / target_sum:.4g}" in said
    # without every training gene, the modelled genes' scale decides
    only_modelled = _lognorm_at(kang_small, target_sum, base)[:, list(state.genes)].copy()
    np.testing.assert_allclose(log_expression(only_modelled, state), expected, rtol=1e-5, atol=1e-5)


def test_lognorm_data_within_the_tolerance_are_used_as_they_are(kang_small, caplog):
    state = fit_preprocessing(_lognorm_at(kang_small, 1e4), config=PreprocessConfig())
    near = _lognorm_at(kang_small, 1.8e4)  # a subset of size-factor data may sit this far off
    with caplog.at_level(logging.WARNING, logger="rnadiff"):
        got = log_expression(near, state)
    np.testing.assert_array_equal(got, dense(near[:, list(state.genes)].X).astype(np.float32))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_model_without_a_recorded_scale_reads_log_values_as_they_are(kang_small):
    import dataclasses

    state = fit_preprocessing(_lognorm_at(kang_small, 1e4), config=PreprocessConfig())
    old = dataclasses.replace(state, log_total=None, log_total_modelled=None)  # before 2026-12-08
    far = _lognorm_at(kang_small, 1e6)
    np.testing.assert_array_equal(
        log_expression(far, old), dense(far[:, list(state.genes)].X).astype(np.float32)
    )


def test_half_floats_are_read_as_float32(kang_small):
    """A dense float16 X (to save space) reads as the same values in float32 would, through
    preprocessing, the minibatch loader and training (scipy.sparse has no float16)."""
    from rnadiff import RNADiffusion, TrainConfig

    x = np.minimum(dense(kang_small.X), 2048)  # integers float16 holds exactly
    half, full = kang_small.copy(), kang_small.copy()
    half.X, full.X = x.astype(np.float16), x.astype(np.float32)
    s16 = fit_preprocessing(half, config=PreprocessConfig())
    s32 = fit_preprocessing(full, config=PreprocessConfig())
    assert s16.genes == s32.genes and s16.input_type == "counts"
    np.testing.assert_array_equal(s16.mean, s32.mean)
    np.testing.assert_array_equal(log_expression(half, s16), log_expression(full, s32))
    weights = []
    for adata in (half, full):
        RNADiffusion.setup_anndata(adata, perturbation_key="group_id", control="ctrl")
        model = RNADiffusion(adata)
        model.train(config=TrainConfig(max_steps=3, calibration_cells=0, spread_cells=0))
        weights.append(next(model.denoiser.parameters()).detach().clone())
    np.testing.assert_array_equal(weights[0].numpy(), weights[1].numpy())
