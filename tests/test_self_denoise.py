"""Self-supervised denoising (``rnadiff.denoise``, ``rnadiff denoise`` without ``--model``):
learned from the cells' own counts, scored by molecular cross-validation."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

import rnadiff
from rnadiff._errors import InputError
from rnadiff.cli import app
from rnadiff.datasets import simulate
from rnadiff.diffusion._counts import binomial_split, poisson_deviance
from rnadiff.evaluation import _denoise as den

STEPS = 300  # enough for the simulated cells' structure; training stops earlier on its own


@pytest.fixture(scope="module")
def shallow():
    """Simulated cells (three cell types) drawn deep, then thinned to 10% of their UMIs."""
    adata, _ = simulate(500, n_genes=150, seed=3, library_median=20000)
    deep = adata.X.toarray()
    thinned = den.thin(deep, 0.1, seed=0)
    keep = thinned.sum(1) > 0
    cells = ad.AnnData(
        sp.csr_matrix(thinned[keep].astype(np.float32)), obs=adata.obs.iloc[keep].copy()
    )
    cells.var_names = adata.var_names
    return cells, deep[keep]


def test_binomial_split_adds_up_and_keeps_its_share():
    import torch

    counts = torch.tensor(
        np.random.default_rng(0).poisson(20.0, size=(200, 50)), dtype=torch.float32
    )
    kept, rest = binomial_split(counts, 0.3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(kept + rest, counts)
    assert (kept >= 0).all() and (rest >= 0).all()
    assert abs(float(kept.sum() / counts.sum()) - 0.3) < 0.01


def test_poisson_deviance_is_zero_at_the_counts_and_positive_elsewhere():
    y = np.array([[0.0, 1.0, 5.0]])
    assert poisson_deviance(y, y) == pytest.approx(0.0, abs=1e-6)
    assert poisson_deviance(y + 1.0, y) > 0


def test_beats_the_input_and_pca_on_held_out_umis_and_deep_truth(shallow):
    cells, deep = shallow
    half, other = den.mcv_split(cells.X.toarray(), p=0.5, seed=1)
    adata = ad.AnnData(half.astype(np.float32), obs=cells.obs.copy())
    rnadiff.denoise(adata, max_steps=STEPS, progress=False)
    ours = np.expm1(adata.layers["rnadiff_denoised"].astype(np.float64))
    info = adata.uns["rnadiff_denoised"]
    assert info["gain"] > 0.02 and info["best_loss"] < info["baseline_loss"]
    # molecular cross-validation: the other half of the UMIs, never seen
    loss = den.mcv_loss(ours, other)
    assert loss < 0.8 * den.mcv_loss(den.normalized(half), other)
    assert loss < den.mcv_loss(den.pca_reconstruction(half), other)
    # closer to the deep cells than the shallow cells are
    truth = den.normalized(deep)
    assert (
        den.correlations(ours, truth)["cell_corr"]
        > den.correlations(den.normalized(half), truth)["cell_corr"] + 0.03
    )


def test_input_untouched_and_result_in_a_layer(shallow):
    cells, _ = shallow
    before = cells.copy()
    out = rnadiff.denoise(cells, inplace=False, max_steps=40, progress=False)
    assert "rnadiff_denoised" not in cells.layers and "rnadiff_denoised" not in cells.uns
    assert (cells.X != before.X).nnz == 0
    assert (out.X != before.X).nnz == 0 and out.obs.equals(before.obs)
    layer = out.layers["rnadiff_denoised"]
    assert layer.shape == cells.shape and np.isfinite(layer).all() and (layer >= 0).all()
    # each row: log1p of an expression per 10,000 counts
    np.testing.assert_allclose(np.expm1(layer.astype(np.float64)).sum(1), 1e4, rtol=1e-3)
    assert out.uns["rnadiff_denoised"]["method"].startswith("self-supervised")
    with pytest.raises(InputError, match="exists"):
        rnadiff.denoise(out, max_steps=5, progress=False)


def test_same_seed_same_result(shallow):
    cells, _ = shallow
    a = rnadiff.denoise(cells, inplace=False, max_steps=20, progress=False, seed=4)
    b = rnadiff.denoise(cells, inplace=False, max_steps=20, progress=False, seed=4)
    np.testing.assert_array_equal(a.layers["rnadiff_denoised"], b.layers["rnadiff_denoised"])


def test_log_values_in_x_with_counts_beside_them_are_denoised_from_the_counts(shallow, caplog):
    cells, _ = shallow
    kw = dict(inplace=False, max_steps=20, progress=False, seed=4, n_models=1)
    expected = rnadiff.denoise(cells, **kw).layers["rnadiff_denoised"]
    counts = cells.X.toarray()
    logged = ad.AnnData(
        np.log1p(counts / counts.sum(1, keepdims=True) * 1e4).astype(np.float32),
        obs=cells.obs.copy(),
        layers={"counts": cells.X.copy()},
    )
    logged.var_names = cells.var_names
    with caplog.at_level(logging.INFO, logger="rnadiff"):
        out = rnadiff.denoise(logged, **kw)  # as training does: the counts layer is read
    np.testing.assert_array_equal(out.layers["rnadiff_denoised"], expected)
    assert out.uns["rnadiff_denoised"]["layer"] == "counts"
    assert "reading the raw counts in adata.layers['counts']" in caplog.text
    # adata.raw with more genes than adata: adata's genes are denoised, in its order
    raw = ad.AnnData(
        sp.hstack([cells.X, sp.csr_matrix(np.ones((cells.n_obs, 3), np.float32))]).tocsr()
    )
    raw.var_names = [*cells.var_names, "x1", "x2", "x3"]
    logged = ad.AnnData(logged.X[:, ::-1].copy(), obs=cells.obs.copy())
    logged.var_names, logged.raw = cells.var_names[::-1], raw
    out = rnadiff.denoise(logged, **kw)
    assert out.uns["rnadiff_denoised"]["use_raw"]
    assert out.layers["rnadiff_denoised"].shape == (cells.n_obs, cells.n_vars)
    assert out.layers["rnadiff_denoised"].max() > 0


def test_an_ensemble_is_the_mean_of_its_networks(shallow):
    cells, _ = shallow
    kw = dict(inplace=False, max_steps=20, progress=False)
    both = rnadiff.denoise(cells, n_models=2, seed=4, **kw)
    one = [rnadiff.denoise(cells, n_models=1, seed=s, **kw) for s in (4, 104)]
    mean = np.mean([np.expm1(o.layers["rnadiff_denoised"].astype(np.float64)) for o in one], 0)
    np.testing.assert_allclose(
        np.expm1(both.layers["rnadiff_denoised"].astype(np.float64)), mean, rtol=1e-4, atol=1e-3
    )
    info, single = both.uns["rnadiff_denoised"], [o.uns["rnadiff_denoised"] for o in one]
    assert info["n_models"] == 2 and list(info["models"]["seed"]) == [4, 104]
    assert list(info["models"]["best_loss"]) == [o["best_loss"] for o in single]
    assert info["best_loss"] == pytest.approx(np.mean([o["best_loss"] for o in single]))
    assert info["steps"] == sum(o["steps"] for o in single)
    with pytest.raises(InputError, match="n_models must be at least 1"):
        rnadiff.denoise(cells, n_models=0, **kw)


def test_warns_when_nothing_beyond_the_average_cell_is_learned(caplog):
    # every cell the same expression: the held-out loss cannot fall below the average cell's
    rng = np.random.default_rng(0)
    share = rng.dirichlet(np.full(80, 0.5))
    counts = rng.poisson(share * 300, size=(300, 80)).astype(np.float32)
    adata = ad.AnnData(counts)
    with caplog.at_level(logging.WARNING, logger="rnadiff"):
        rnadiff.denoise(adata, max_steps=200, progress=False)
    assert adata.uns["rnadiff_denoised"]["gain"] < 0.002
    assert "learned nothing beyond the average cell" in caplog.text


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ad.AnnData(np.full((30, 10), 0.5, dtype=np.float32)), "raw counts"),
        (lambda: ad.AnnData(np.ones((5, 10), dtype=np.float32)), "at least 20 cells"),
    ],
)
def test_refuses_what_it_cannot_split(make, message):
    with pytest.raises(InputError, match=message):
        rnadiff.denoise(make(), max_steps=5, progress=False)


def test_cli_denoise_without_a_model(shallow, tmp_path):
    cells, _ = shallow
    data, out = tmp_path / "shallow.h5ad", tmp_path / "out.h5ad"
    cells.write_h5ad(data)
    runner = CliRunner()
    args = ["denoise", "--data", data, "--out", out, "--max-steps", "30", "--quiet"]
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "held-out loss per UMI" in result.output and "mean of 3 networks" in result.output
    written = ad.read_h5ad(out)
    assert (written.X != cells.X).nnz == 0
    assert written.layers["rnadiff_denoised"].shape == cells.shape
    # --sigma belongs to denoising with a reference model
    bad = runner.invoke(app, [str(a) for a in [*args[:4], tmp_path / "x.h5ad", "--sigma", "1"]])
    assert isinstance(bad.exception, InputError) and "--sigma needs --model" in str(bad.exception)
    assert not (tmp_path / "x.h5ad").exists()
    zero = runner.invoke(app, [str(a) for a in [*args[:4], tmp_path / "y.h5ad", "--n-models", "0"]])
    assert isinstance(zero.exception, InputError)
    assert "--n-models must be at least 1" in str(zero.exception)


def test_a_low_rank_read_out_bounds_the_rank_of_the_logits():
    import torch

    from rnadiff.networks._count_denoiser import CountDenoiser

    torch.manual_seed(0)
    net = CountDenoiser(30, width=16, depth=1, emb_dim=8, bottleneck=3)
    with torch.no_grad():
        for p in net.parameters():  # the read-out starts at zero: give it weights
            p.add_(0.1 * torch.randn_like(p))
        logits = net(torch.randn(50, 30), torch.randn(50))
    centred = logits - net.log_share
    assert torch.linalg.matrix_rank(centred - centred.mean(0), atol=1e-4) <= 3
    full = CountDenoiser(30, width=16, depth=1, emb_dim=8)
    with torch.no_grad():
        for p in full.parameters():
            p.add_(0.1 * torch.randn_like(p))
        wide = full(torch.randn(50, 30), torch.randn(50)) - full.log_share
    assert torch.linalg.matrix_rank(wide - wide.mean(0), atol=1e-4) > 3
    with pytest.raises(ValueError, match="bottleneck"):
        CountDenoiser(30, width=16, bottleneck=16)
