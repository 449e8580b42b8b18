"""Count thinning as a training corruption: what the loss sees is a real shallower cell."""

import numpy as np
import pytest
import torch

from rnadiff.training._thinning import CountThinning


def _setup(n=40, genes=30, seed=0):
    rng = np.random.default_rng(seed)
    expr = rng.gamma(0.5, 20.0, size=genes)  # per 1e4 counts
    depth = rng.integers(2000, 8000, size=n).astype(float)
    counts = rng.poisson(expr[None, :] * depth[:, None] / 1e4).astype(np.float32)
    totals = depth + counts.sum(1)  # the cells' other genes add to their depth
    logx = np.log1p(counts * 1e4 / totals[:, None])
    mean, std = logx.mean(0), np.maximum(logx.std(0), 0.05)
    thin = CountThinning(
        counts, totals, mean=mean, std=std, expr_mean=expr, target_sum=1e4, fraction=1.0
    )
    x0 = torch.as_tensor(((logx - mean) / std).astype(np.float32))
    return thin, counts, mean, std, x0


def test_thinned_cells_are_shallower_copies_of_the_originals():
    thin, counts, mean, std, x0 = _setup()
    idx = torch.arange(len(counts))
    sigma, noise = torch.full((len(idx),), 0.7), torch.randn(x0.shape)
    s, n = thin(idx, x0, sigma, noise, torch.Generator().manual_seed(0))
    seen = (x0 + s[:, None] * n).numpy().astype(np.float64)  # what the loss feeds the denoiser
    values = np.expm1(seen * std + mean)  # kept counts x 1e4 / thinned depth
    # kept counts are whole numbers: in nearly every cell, every value is a whole multiple of
    # the smallest one (a gene kept once), and never more genes are seen than before
    whole = []
    for v in values:
        v = v[v > 1e-4]
        ratio = v / v.min()
        whole.append(np.abs(ratio - np.round(ratio)).max() < 1e-2)
    assert np.mean(whole) > 0.9
    assert ((values > 1e-4).sum(1) <= (counts > 0).sum(1)).all()
    assert (values > 1e-4).sum() < 0.9 * (counts > 0).sum()
    assert (s >= thin.floor - 1e-6).all() and not torch.equal(s, sigma)
    # the same generator state gives the same corruption (exact resume)
    s2, n2 = thin(idx, x0, sigma, noise, torch.Generator().manual_seed(0))
    assert torch.equal(s, s2) and torch.equal(n, n2)


def test_noise_level_grows_as_the_cell_gets_shallower():
    thin = _setup(n=1)[0]
    assert thin._error(torch.tensor([100.0])) > thin._error(torch.tensor([5000.0]))


def test_fraction_leaves_the_other_cells_gaussian():
    thin, _, _, _, x0 = _setup(n=400)
    thin.fraction = 0.5
    sigma, noise = torch.full((400,), 0.3), torch.randn(x0.shape)
    s, n = thin(torch.arange(400), x0, sigma, noise, torch.Generator().manual_seed(1))
    changed = (s != sigma) | (n != noise).any(1)
    assert 150 < int(changed.sum()) < 250
    assert torch.equal(n[~changed], noise[~changed])


def test_bad_settings_are_refused():
    _, counts, mean, std, _ = _setup()
    totals = counts.sum(1) + 100
    kw = dict(mean=mean, std=std, expr_mean=np.ones(counts.shape[1]), target_sum=1e4)
    with pytest.raises(ValueError, match="fraction"):
        CountThinning(counts, totals, fraction=0.0, **kw)
    with pytest.raises(ValueError, match="min_rate"):
        CountThinning(counts, totals, fraction=0.5, min_rate=0.6, max_rate=0.5, **kw)
    with pytest.raises(ValueError, match="counts"):
        CountThinning(counts, np.zeros(len(counts)), fraction=0.5, **kw)
