"""Counts out: ``generate(..., counts=True)`` and ``predict(..., counts=True)``, and the maths
under them (:mod:`rnadiff.diffusion._counts`, :mod:`rnadiff.model._counts`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from rnadiff import ModelConfig, NetworkConfig, PreprocessConfig, RNADiffusion, TrainConfig
from rnadiff._errors import InputError
from rnadiff.diffusion._counts import (
    expected_log_counts,
    invert_log_poisson_mean,
    log_normalize,
    sample_counts,
)
from rnadiff.model._counts import N_QUANTILES, LibrarySizes


# ------------------------------------------------------------------ maths
@pytest.mark.parametrize("depth", [300.0, 2000.0, 20000.0])
def test_inverting_the_expected_log_value_gives_the_expression_back(depth):
    expr = np.geomspace(0.05, 5000, 40)
    y = expected_log_counts(expr, depth)[None, :]
    back = invert_log_poisson_mean(y, np.array([depth]))
    np.testing.assert_allclose(back[0], expr, rtol=0.02)
    # Jensen: the expected log value lies below log1p(expr), farthest for rare genes
    gap = np.log1p(expr) - y[0]
    assert (gap > 0).all() and gap[:10].mean() > gap[-10:].mean()


def test_expected_log_value_matches_poisson_draws():
    rng = np.random.default_rng(0)
    expr, depth, s = np.array([2.0, 30.0, 800.0]), 1500.0, 1e4
    draws = rng.poisson(expr * depth / s, size=(200_000, 3))
    np.testing.assert_allclose(
        expected_log_counts(expr, depth), np.log1p(draws * s / depth).mean(0), rtol=0.01
    )


def test_sampled_counts_follow_the_library_sizes_and_the_shares():
    rng = np.random.default_rng(1)
    expr = np.tile([[1.0, 3.0, 6.0]], (4000, 1))
    libs = np.repeat([100.0, 1000.0], 2000)
    c = sample_counts(expr, libs, rng=rng)
    assert c.dtype.kind == "i" and (c >= 0).all()
    np.testing.assert_allclose(c[:2000].sum(1).mean(), 100, rtol=0.02)
    np.testing.assert_allclose(c[2000:].sum(1).mean(), 1000, rtol=0.01)
    np.testing.assert_allclose(c.sum(0) / c.sum(), [0.1, 0.3, 0.6], atol=0.01)
    x = log_normalize(c)
    np.testing.assert_allclose(np.expm1(x.astype(np.float64)).sum(1), 1e4, rtol=1e-4)


def test_library_sizes_of_an_unmeasured_condition_shift_by_the_perturbation():
    # two cell types x ctrl/stim; stim has twice the depth in A; B's stim is never measured
    q = lambda m: np.log(m) + np.linspace(-0.5, 0.5, N_QUANTILES)  # noqa: E731
    libs = LibrarySizes(
        rows=[("A", "ctrl"), ("A", "stim"), ("B", "ctrl")],
        quantiles=np.stack([q(1000), q(2000), q(500)]),
        n_cells=np.array([10, 10, 10]),
        overall=q(1000),
    )
    np.testing.assert_allclose(libs.quantile_function(("A", "stim"), 1, "ctrl"), q(2000))
    np.testing.assert_allclose(libs.quantile_function(("B", "stim"), 1, "ctrl"), q(1000))
    mixed = libs.quantile_function(("A", None), 1, "ctrl")  # partly given: A's two conditions
    assert q(1000)[N_QUANTILES // 2] < mixed[N_QUANTILES // 2] < q(2000)[N_QUANTILES // 2]
    again = LibrarySizes.from_json(libs.to_json())
    np.testing.assert_array_equal(again.quantiles, libs.quantiles)
    assert again.rows == libs.rows


# ------------------------------------------------------------------ the model
@pytest.fixture(scope="module")
def trained(kang_per_group):
    adata = kang_per_group(60)
    totals = np.asarray(adata.X.sum(0)).ravel()
    adata = adata[:, np.sort(np.argsort(-totals)[:400])].copy()
    RNADiffusion.setup_anndata(
        adata, perturbation_key="group_id", control="ctrl", cell_type_key="cluster_id"
    )
    config = ModelConfig(
        preprocess=PreprocessConfig(n_top_genes=300),
        network=NetworkConfig(width=64, depth=2, emb_dim=32),
    )
    model = RNADiffusion(adata, config=config)
    model.train(config=TrainConfig(max_steps=150, batch_size=64), progress=False)
    return model, adata


def _depths(adata) -> pd.Series:
    return pd.Series(np.asarray(adata.X.sum(1)).ravel(), index=adata.obs_names)


def _check_consistent(out, n_genes):
    counts = out.layers["counts"]
    dense = counts.toarray()
    assert counts.dtype.kind == "i" and (dense >= 0).all()
    assert out.n_vars == n_genes  # every gene, modelled or not
    np.testing.assert_allclose(out.X, log_normalize(dense), atol=1e-5)
    np.testing.assert_array_equal(out.obs["total_counts"], dense.sum(1))
    assert out.uns["log1p"] == {"base": None}
    assert "counts" in out.uns["rnadiff"]


def test_generate_counts_at_each_conditions_library_sizes(trained):
    model, adata = trained
    depth = _depths(adata)
    by_type = depth[(adata.obs.group_id == "ctrl").to_numpy()].groupby(
        adata.obs.cluster_id[adata.obs.group_id == "ctrl"], observed=True
    )
    medians = by_type.median()
    deep, shallow = medians.idxmax(), medians.idxmin()
    assert medians[deep] > 1.5 * medians[shallow]  # the test needs types of different depth
    for cell_type in (deep, shallow):
        out = model.generate(
            {"group_id": "ctrl", "cluster_id": cell_type},
            n_cells=200,
            counts=True,
            steps=8,
            seed=1,
            progress=False,
        )
        _check_consistent(out, adata.n_vars)
        ratio = np.median(out.obs["total_counts"]) / medians[cell_type]
        assert 0.8 < ratio < 1.25, (cell_type, ratio)
    # without counts: as before, no layer
    plain = model.generate({"group_id": "ctrl"}, n_cells=5, steps=4, progress=False)
    assert "counts" not in plain.layers


def test_generated_counts_have_realistic_zeros_and_values(trained):
    model, adata = trained
    cond = {"group_id": "stim", "cluster_id": "CD4 T cells"}
    real = adata[((adata.obs.group_id == "stim") & (adata.obs.cluster_id == "CD4 T cells")).values]
    out = model.generate(cond, n_cells=200, counts=True, steps=8, progress=False)
    real_zero = (real.X.toarray() == 0).mean(0)
    gen_zero = (out.layers["counts"].toarray() == 0).mean(0)
    assert np.corrcoef(real_zero, gen_zero)[0, 1] > 0.8
    assert (
        out.X.max()
        < 1.2 * np.log1p(real.X.toarray() / _depths(real).to_numpy()[:, None] * 1e4).max()
    )


def test_predict_counts_keep_each_source_cells_depth_rank(trained):
    model, adata = trained
    source = adata[((adata.obs.group_id == "ctrl") & (adata.obs.cluster_id == "B cells")).values]
    out = model.predict(source, perturbation="stim", counts=True, steps=8, progress=False)
    _check_consistent(out, adata.n_vars)
    assert list(out.obs_names) == list(source.obs_names)
    rho = spearmanr(_depths(source), out.obs["total_counts"]).statistic
    assert rho > 0.9


def test_counts_survive_save_and_load(trained, tmp_path):
    model, _ = trained
    model.save(tmp_path / "m")
    loaded = RNADiffusion.load(tmp_path / "m")
    cond = {"group_id": "stim", "cluster_id": "B cells"}
    a = model.generate(cond, n_cells=20, counts=True, steps=4, seed=2, progress=False)
    b = loaded.generate(cond, n_cells=20, counts=True, steps=4, seed=2, progress=False)
    np.testing.assert_array_equal(a.layers["counts"].toarray(), b.layers["counts"].toarray())


def test_counts_need_a_model_trained_on_counts(kang_per_group):
    adata = kang_per_group(20)
    logged = adata.copy()
    logged.X = logged.layers["logcounts"]
    RNADiffusion.setup_anndata(logged, perturbation_key="group_id", control="ctrl")
    model = RNADiffusion(
        logged, config=ModelConfig(network=NetworkConfig(width=32, depth=1, emb_dim=16))
    )
    model.train(config=TrainConfig(max_steps=5, batch_size=32), progress=False)
    with pytest.raises(InputError, match="raw counts"):
        model.generate({"group_id": "stim"}, n_cells=3, counts=True, progress=False)
    with pytest.raises(InputError, match="raw counts"):
        model.predict(logged[:3], perturbation="stim", counts=True, progress=False)
