"""Scores for ranking candidate conditions: diffusion-classifier errors and rank combination."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats

from rnadiff.diffusion._loss import edm_loss_weight

Denoiser = Callable[[torch.Tensor, torch.Tensor, dict | None], torch.Tensor]


def training_noise_levels(n: int, *, p_mean: float, p_std: float) -> torch.Tensor:
    """``n`` noise levels at evenly spaced quantiles of the training distribution of sigma
    (``ln sigma ~ N(p_mean, p_std^2)``), so every level weighs as it did in training."""
    if n < 1:
        raise ValueError(f"need at least one noise level, got {n}")
    u = (np.arange(n) + 0.5) / n
    return torch.as_tensor(np.exp(p_mean + p_std * stats.norm.ppf(u)), dtype=torch.float32)


def log_uniform_levels(n: int, lo: float, hi: float) -> torch.Tensor:
    """``n`` noise levels evenly spaced in ``log sigma`` from ``lo`` to ``hi``."""
    if n < 1 or not 0 < lo <= hi:
        raise ValueError(f"need n >= 1 and 0 < lo <= hi, got {n}, {lo}, {hi}")
    return torch.as_tensor(np.geomspace(lo, hi, n), dtype=torch.float32)


@torch.no_grad()
def denoising_errors(
    denoiser: Denoiser,
    x0: torch.Tensor,
    conds: Sequence[dict[str, torch.Tensor]],
    sigmas: torch.Tensor,
    *,
    n_draws: int = 1,
    sigma_data: float = 1.0,
    generator: torch.Generator | None = None,
    batch_size: int = 4096,
    stacked_denoiser: Callable[[slice], Denoiser] | None = None,
) -> np.ndarray:
    """Weighted denoising error of every cell under every condition (a diffusion classifier).

    ``E_k[c, i] = mean over sigmas and draws of lambda(sigma) ||D(x_i + sigma eps, sigma, c) -
    x_i||^2 / n_genes``: the training loss, an upper bound on ``-log p(x_i | c)`` up to terms
    that do not depend on ``c`` (Li et al. 2023, "Your diffusion model is secretly a zero-shot
    classifier"). The same noise ``eps`` is used for every condition, so differences between
    conditions are not drowned in sampling noise.

    The cells under all conditions are stacked (cell ``i`` under condition ``k`` is row
    ``k * n_cells + i``) and denoised ``batch_size`` rows at a time, so that many conditions
    of a few cells each still make large, efficient batches.

    Parameters
    ----------
    denoiser
        ``denoiser(x, sigma, cond) -> x0_hat``.
    x0
        Clean cells ``(n_cells, n_genes)`` in the denoiser's space.
    conds
        One condition per candidate; each a dict of tensors with ``n_cells`` rows and the
        same keys.
    sigmas
        Noise levels to average over.
    n_draws
        Noise draws per level.
    sigma_data
        For the EDM loss weight.
    generator
        Seeds the noise.
    batch_size
        Stacked rows per denoiser call.
    stacked_denoiser
        Optional: ``f(b)`` gives the denoiser for the stacked rows in slice ``b`` (for wrappers
        that depend on the cells and conditions, e.g. a transferred effect); replaces
        ``denoiser``.

    Returns
    -------
    numpy.ndarray
        ``(n_conditions, n_cells)``; lower is more likely.
    """
    n, k_conds = x0.shape[0], len(conds)
    if not k_conds:
        raise ValueError("give at least one condition")
    keys = set(conds[0])
    if any(set(c) != keys for c in conds):
        raise ValueError("every condition must have the same keys")
    if any(v.shape[0] != n for c in conds for v in c.values()):
        raise ValueError(f"every condition needs one row per cell ({n})")
    stacked = {key: torch.cat([c[key] for c in conds]) for key in keys}
    total = n * k_conds
    batches = [slice(i, min(i + batch_size, total)) for i in range(0, total, batch_size)]
    denoisers = [denoiser if stacked_denoiser is None else stacked_denoiser(b) for b in batches]
    cell = torch.arange(total) % n
    errors = torch.zeros(total, dtype=torch.float64)
    count = 0
    for sigma in sigmas:
        s = float(sigma)
        weight = float(edm_loss_weight(torch.tensor(s), sigma_data))
        for _ in range(n_draws):
            noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
            noisy = x0 + s * noise
            for d, b in zip(denoisers, batches, strict=True):
                rows = cell[b]
                c = {key: v[b] for key, v in stacked.items()}
                out = d(noisy[rows], noisy.new_full((b.stop - b.start,), s), c)
                errors[b] += weight * (out - x0[rows]).pow(2).mean(dim=1).double()
            count += 1
    return (errors / count).reshape(k_conds, n).numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity (0 when either vector is zero)."""
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0


def combine_ranks(table: pd.DataFrame, columns: dict[str, bool]) -> pd.DataFrame:
    """Rank candidates on each score column and on the mean of those ranks.

    Parameters
    ----------
    table
        One row per candidate.
    columns
        ``{score column: higher_is_better}``.

    Returns
    -------
    pandas.DataFrame
        ``table`` with ``rank_<column>`` for each score (1 = best, ties share the lowest rank)
        and ``rank`` (by mean rank; ties broken by the first score), sorted by ``rank``.
    """
    out = table.copy()
    rank_cols = []
    for col, higher in columns.items():
        name = f"rank_{col}"
        out[name] = out[col].rank(ascending=not higher, method="min", na_option="bottom")
        rank_cols.append(name)
    out["mean_rank"] = out[rank_cols].mean(axis=1)
    first = next(iter(columns))
    order = out.sort_values(
        ["mean_rank", first], ascending=[True, not columns[first]], kind="stable"
    )
    order["rank"] = np.arange(1, len(order) + 1)
    return order.reset_index(drop=True)


def ranking_metrics(ranks: Sequence[int], *, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracies and mean reciprocal rank of the true candidates' ranks (1 = best)."""
    r = np.asarray(ranks, dtype=float)
    if r.size == 0:
        raise ValueError("no ranks given")
    out = {f"top{k}": float((r <= k).mean()) for k in ks}
    out["mrr"] = float((1 / r).mean())
    return out


def random_ranking_metrics(n_candidates: int, *, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Expected top-k accuracy and MRR of a uniformly random ranking of ``n_candidates``."""
    out = {f"top{k}": min(k, n_candidates) / n_candidates for k in ks}
    out["mrr"] = float(np.mean(1 / np.arange(1, n_candidates + 1)))
    return out
