"""Technical (counting) noise of log-normalized expression, in the model's space.

A cell sequenced to ``depth`` UMIs observes gene ``g`` as ``c ~ Poisson(m_g depth / s)``,
with ``m_g`` its expression per ``s`` (``target_sum``) counts; preprocessing turns it into
``y = log1p(c s / depth)``. Its error against the noise-free ``log1p(m_g)`` falls with depth.
Expressed in units of each gene's training standard deviation and averaged over genes, it
gives the noise level ``sigma`` a cell carries beyond a reference depth: what
:meth:`rnadiff.RNADiffusion.denoise` removes with ``sigma="auto"``.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import poisson

EXACT_BELOW = 1e4  # Poisson means summed exactly up to here; the delta method above
_GROUPS = (30.0, 300.0, 3000.0, EXACT_BELOW)  # genes summed together, by Poisson mean


def _moments(expr_mean, depth: float, target_sum: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of ``log1p(c * target_sum / depth)``, ``c ~ Poisson(expr_mean *
    depth / target_sum)``, per gene: exact up to Poisson means of 10^4, delta method above."""
    m = np.asarray(expr_mean, dtype=np.float64)
    if depth <= 0 or not np.isfinite(depth):
        raise ValueError(f"depth must be positive, got {depth}")
    if (m < 0).any() or not np.isfinite(m).all():
        raise ValueError("expr_mean must be finite and non-negative")
    k = target_sum / depth
    lam = m / k
    # second-order delta method: E[f(c)] ~ f(lam) + f''(lam) lam / 2, Var ~ f'(lam)^2 lam
    mean = np.log1p(m) - lam * k**2 / (2 * (1 + lam * k) ** 2)
    var = lam * k**2 / (1 + lam * k) ** 2
    low = 0.0
    for high in _GROUPS:
        genes = np.flatnonzero((lam > low) & (lam <= high))
        low = high
        if not len(genes):
            continue
        lg = lam[genes]
        start = np.maximum(np.floor(lg - 12 * np.sqrt(lg) - 12), 0.0)
        width = int(np.ceil((lg + 12 * np.sqrt(lg) + 12 - start).max())) + 1
        c = start[None, :] + np.arange(width, dtype=np.float64)[:, None]
        prob = poisson.pmf(c, lg[None, :])
        prob /= prob.sum(axis=0)
        y = np.log1p(c * k)
        mean[genes] = (prob * y).sum(axis=0)
        var[genes] = (prob * (y - mean[genes]) ** 2).sum(axis=0)
    mean[lam == 0], var[lam == 0] = 0.0, 0.0
    return mean, var


def log_poisson_variance(expr_mean, depth: float, target_sum: float = 1e4) -> np.ndarray:
    """Per-gene variance of ``log1p(c * target_sum / depth)`` for ``c ~ Poisson(expr_mean *
    depth / target_sum)``.

    Exact for Poisson means up to 10^4 (summed over counts within 12 standard deviations of
    the mean); above, the delta method ``lam k^2 / (1 + lam k)^2`` with
    ``k = target_sum / depth``, accurate to about ``1 / lam``.

    Parameters
    ----------
    expr_mean
        Expression per ``target_sum`` counts, per gene (non-negative).
    depth
        The cell's total counts (positive).
    target_sum
        The normalization total of preprocessing.

    Returns
    -------
    numpy.ndarray
        One variance per gene.
    """
    return _moments(expr_mean, depth, target_sum)[1]


def log_poisson_error(expr_mean, depth: float, target_sum: float = 1e4) -> np.ndarray:
    """Per-gene mean squared error of the observed ``log1p(c * target_sum / depth)`` against
    the noise-free ``log1p(expr_mean)``: its variance plus its squared bias.

    The bias matters in shallow cells: a gene that is rarely counted is mostly observed as 0,
    which varies little but is far from its true value, so the variance alone would call such
    cells less noisy than deeper ones. The error falls with depth. Parameters as in
    :func:`log_poisson_variance`.
    """
    mean, var = _moments(expr_mean, depth, target_sum)
    return var + (mean - np.log1p(np.asarray(expr_mean, dtype=np.float64))) ** 2


def technical_sigma(
    depths,
    expr_mean,
    gene_std,
    *,
    reference_depth: float,
    target_sum: float = 1e4,
    floor: float = 0.002,
    grid: int = 64,
) -> np.ndarray:
    """Noise level of each cell beyond a reference depth, in the model's (z-scored) space.

    ``sigma_i^2 = v(depth_i) - v(reference_depth)`` with ``v(d)`` the mean over genes of
    :func:`log_poisson_error` divided by the gene's squared scale: the counting error a
    cell carries on top of what cells at the reference depth (e.g. the training cells'
    median) carry. Cells at or above the reference depth get ``floor``. ``v`` is evaluated on
    a log-spaced grid of depths and interpolated.

    Parameters
    ----------
    depths
        Total counts per cell.
    expr_mean
        Expression per ``target_sum`` counts of each gene (the training cells' mean).
    gene_std
        Each gene's scale in the model's space (its training standard deviation of log values).
    reference_depth
        Depth whose own noise is not removed.
    target_sum
        The normalization total of preprocessing.
    floor
        Smallest returned level.
    grid
        Depths at which ``v`` is evaluated exactly.

    Returns
    -------
    numpy.ndarray
        One noise level per cell.
    """
    d = np.asarray(depths, dtype=np.float64)
    std = np.asarray(gene_std, dtype=np.float64)
    if d.ndim != 1 or (d <= 0).any() or not np.isfinite(d).all():
        raise ValueError("depths must be a 1-d array of positive numbers")
    if np.shape(expr_mean) != std.shape:
        raise ValueError("expr_mean and gene_std must have one value per gene")
    if reference_depth <= 0:
        raise ValueError(f"reference_depth must be positive, got {reference_depth}")

    lo, hi = min(d.min(), reference_depth), max(d.max(), reference_depth)
    points, values = error_curve(expr_mean, std, lo=lo, hi=hi, target_sum=target_sum, grid=grid)
    at = np.interp(np.log(d), np.log(points), values)
    ref = np.interp(np.log(reference_depth), np.log(points), values)
    return np.sqrt(np.maximum(at - ref, floor**2))


def error_curve(
    expr_mean, gene_std, *, lo: float, hi: float, target_sum: float = 1e4, grid: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """The mean counting error in the model's space on a log-spaced grid of depths.

    Returns ``(depths, v)`` with ``v(d)`` the mean over genes of :func:`log_poisson_error`
    divided by the gene's squared scale, for ``grid`` depths from ``lo`` to ``hi``.
    """
    std = np.asarray(gene_std, dtype=np.float64)
    if not 0 < lo <= hi:
        raise ValueError(f"need 0 < lo <= hi, got {lo}, {hi}")
    points = np.unique(np.geomspace(lo, hi, grid)) if hi > lo else np.array([float(lo)])
    values = np.array(
        [np.mean(log_poisson_error(expr_mean, float(p), target_sum) / std**2) for p in points]
    )
    return points, values
