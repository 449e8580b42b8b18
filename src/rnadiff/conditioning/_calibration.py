"""Calibration on the training cells (pure functions on arrays): how much a model's predicted
perturbation effects must be scaled to match the effects measured in its training data, and
how much its counterfactual cells must be widened to match the spread of real cells."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from rnadiff.conditioning import _conditions as conditions

SCALE_RANGE = (0.5, 5.0)


def effect_scales(
    predicted: Mapping[str, np.ndarray],
    observed: Mapping[str, np.ndarray],
    *,
    bounds: tuple[float, float] = SCALE_RANGE,
) -> dict[str, float]:
    """Least-squares factor of each predicted mean effect onto the observed one.

    ``s_k = <observed_k, predicted_k> / <predicted_k, predicted_k>``, clipped to ``bounds``:
    the regression of the observed effect on the predicted one (through the origin), so noise
    in the observed training means does not bias the factor, whereas regressing the other way
    would shrink it. A predicted effect of exactly zero gets 1 (nothing to scale).

    Parameters
    ----------
    predicted, observed
        Mean change from control per perturbation (vectors over genes); the keys of
        ``predicted`` must be in ``observed``.
    bounds
        Smallest and largest factor.

    Returns
    -------
    dict
        ``{perturbation: factor}``.
    """
    low, high = bounds
    if not 0 < low <= 1 <= high:
        raise ValueError(f"bounds must satisfy 0 < low <= 1 <= high, got {bounds}")
    out = {}
    for k, p in predicted.items():
        p = np.asarray(p, dtype=np.float64)
        o = np.asarray(observed[k], dtype=np.float64)
        if p.shape != o.shape:
            raise ValueError(f"{k}: predicted {p.shape} and observed {o.shape} differ in shape")
        norm = float(p @ p)
        out[k] = 1.0 if norm == 0 else float(np.clip((o @ p) / norm, low, high))
    return out


SPREAD_RANGE = (0.5, 2.0)


def cell_effect_scales(
    cov, scales: Mapping[str, float], values, prior_weights: Callable[[str], dict[str, float]]
) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's calibrated effect scale from the perturbation ``values`` of the cells
    (covariate ``cov``; 1 where none was calibrated) and which cells' perturbation was never
    seen (predicted from its expression prior).

    A perturbation never seen takes the prior's mix (``prior_weights(name)``: token ->
    weight) of its tokens' scales; a combination never measured the mean of its parts' (the
    network under-fits a combination's parts as it does the singles)."""
    names = [conditions.canonical(cov, v) for v in values]
    found = {v: scales.get(v, 1.0) for v in set(names) if v is not None}
    unseen = [v for v in found if len(cov.parts(v)) == 1 and v not in cov.tokens]
    for v in unseen:
        found[v] = sum(w * scales.get(t, 1.0) for t, w in prior_weights(v).items()) or 1.0
    for v in found:
        parts = cov.parts(v)
        if len(parts) > 1 and v not in scales:
            found[v] = float(np.mean([scales.get(t, 1.0) for t in parts]))
    out = np.array([found.get(v, 1.0) for v in names])
    return out, pd.Series(names).isin(unseen).to_numpy()


def spread_ratio(moved: np.ndarray, real: np.ndarray) -> float:
    """How much wider real cells are than cells moved to their condition.

    ``sqrt(sum_g var(real_g) / sum_g var(moved_g))``: the ratio of the populations' total
    standard deviations (variances over cells with ``ddof=1``, summed over genes).

    Parameters
    ----------
    moved
        Cells predicted for a condition, ``(n, genes)``, at least 2.
    real
        Real cells of that condition, ``(m, genes)``, at least 2.

    Returns
    -------
    float
        The ratio; 1 when both populations are constant, ``inf`` when only the moved one is.
    """
    moved, real = np.asarray(moved, dtype=np.float64), np.asarray(real, dtype=np.float64)
    if moved.ndim != 2 or real.ndim != 2 or moved.shape[1] != real.shape[1]:
        raise ValueError(f"moved {moved.shape} and real {real.shape} must be (cells, genes)")
    if len(moved) < 2 or len(real) < 2:
        raise ValueError("moved and real need at least 2 cells each")
    v_moved, v_real = moved.var(0, ddof=1).sum(), real.var(0, ddof=1).sum()
    if v_moved == 0:
        return 1.0 if v_real == 0 else float("inf")
    return float(np.sqrt(v_real / v_moved))


def widen(x: np.ndarray, groups: np.ndarray, scale: float) -> np.ndarray:
    """Widen each group of cells around its own mean, keeping every gene's mean.

    Each cell becomes ``mean + scale * (cell - mean)``. Values are log-normalized expression,
    so they are then clipped at 0, and each gene's values in the group are multiplied by the
    factor that restores its mean (clipping alone would raise the mean of genes that are 0
    in many cells). A group of one cell, and a gene that is 0 throughout, are unchanged.

    Parameters
    ----------
    x
        Non-negative cells ``(n, genes)``.
    groups
        Group label of each cell, length ``n``.
    scale
        The factor, positive.

    Returns
    -------
    ndarray
        A new array of ``x``'s shape and dtype.
    """
    x = np.asarray(x)
    groups = np.asarray(groups)
    if x.ndim != 2 or len(groups) != len(x):
        raise ValueError(f"{len(groups)} group labels for cells of shape {x.shape}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if (x < 0).any():
        raise ValueError("x must be non-negative (log-normalized expression)")
    out = x.astype(np.float64, copy=True)
    codes = pd.factorize(groups)[0]
    for g in np.unique(codes):
        rows = codes == g
        center = out[rows].mean(0)
        wide = np.clip(center + scale * (out[rows] - center), 0, None)
        now = wide.mean(0)
        out[rows] = wide * np.divide(center, now, out=np.ones_like(now), where=now > 0)
    return out.astype(x.dtype, copy=False)
