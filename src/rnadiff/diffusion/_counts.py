"""Counts from log-normalized profiles, and the binomial split of counts (pure maths).

**From a profile to counts.** A cell of depth ``d`` observes gene ``g`` as
``c_g ~ Poisson(m_g d / s)``, with ``m_g`` its expression per ``s`` (``target_sum``) counts, and
preprocessing turns it into ``y_g = log1p(c_g s / d)``. A profile the model denoised at the
counting noise level is an estimate of ``E[y_g]``, not of ``log1p(m_g)``: for a rarely counted
gene ``E[log1p(c s / d)]`` is far below ``log1p(m_g)`` (Jensen). So the expression is found by
inverting the expectation,

    m_g  such that  f_d(m_g) = E_{c ~ Poisson(m_g d / s)}[log1p(c s / d)] = y_g,          (1)

(``f_d`` is increasing in ``m``; :func:`invert_log_poisson_mean`), and counts are drawn at a
library size ``L``:

    mu_g = L m_g / sum_h m_h,        c_g ~ Poisson(mu_g),                                    (2)

so that a cell's total is ``L`` up to Poisson noise (:func:`sample_counts`).

**Binomial split** (molecular cross-validation, Batson et al. 2019; Noise2Self, Batson & Royer
2019): each of a cell's UMIs is kept with probability ``p``; the kept counts ``X'`` and the rest
``X''`` are independent Poisson samples of the same expression at depths ``p d`` and
``(1 - p) d`` (:func:`binomial_split`). A denoiser of ``X'`` scored on ``X''`` by the Poisson
deviance (:func:`poisson_deviance`) is scored on data it never saw.
"""

from __future__ import annotations

import numpy as np
import torch

from rnadiff.diffusion._count_noise import _moments

# expression per target_sum at which f_d of eq. (1) is tabulated: 0, then log-spaced
M_GRID = np.concatenate([[0.0], np.geomspace(1e-4, 1e6, 321)])


def expected_log_counts(expr, depth: float, target_sum: float = 1e4) -> np.ndarray:
    """``f_d(m) = E[log1p(c s / d)]`` for ``c ~ Poisson(m d / s)`` (eq. 1), per value of ``m``
    (exact up to Poisson means of 10^4, second-order delta method above)."""
    return _moments(np.asarray(expr, dtype=np.float64), float(depth), target_sum)[0]


def invert_log_poisson_mean(
    y, depths, *, target_sum: float = 1e4, n_depths: int = 24
) -> np.ndarray:
    """Expression per ``target_sum`` whose expected log-normalized value at each cell's depth
    is ``y`` (eq. 1 of this module).

    ``f_d`` is tabulated on :data:`M_GRID` at ``n_depths`` log-spaced depths spanning
    ``depths``; each cell's value is interpolated linearly in ``log d`` between the inverses
    at the two depths around its own. Values at or below 0 give 0; values above the table's
    range give its largest expression.

    Parameters
    ----------
    y
        Log-normalized values, cells x genes (natural log1p of expression per target_sum).
    depths
        Each cell's depth (total counts), positive.
    target_sum
        The normalization total.
    n_depths
        Depths at which ``f_d`` is tabulated.

    Returns
    -------
    numpy.ndarray
        Expression per ``target_sum``, cells x genes (float64, non-negative).
    """
    y = np.asarray(y, dtype=np.float64)
    d = np.asarray(depths, dtype=np.float64).reshape(-1)
    if y.ndim != 2 or len(d) != y.shape[0]:
        raise ValueError("y must be cells x genes with one depth per cell")
    if (d <= 0).any() or not np.isfinite(d).all():
        raise ValueError("depths must be positive")
    grid = np.geomspace(d.min(), d.max(), n_depths) if d.max() > d.min() else d[:1]
    tables = [expected_log_counts(M_GRID, g, target_sum) for g in grid]
    # f_d is increasing; np.interp needs strictly increasing x: drop flat steps
    inverses = []
    for f in tables:
        keep = np.concatenate([[True], np.diff(f) > 0])
        inverses.append((f[keep], M_GRID[keep]))
    y = np.clip(y, 0.0, None)
    out = np.empty_like(y)
    pos = np.interp(np.log(d), np.log(grid), np.arange(len(grid)))
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(grid) - 1)
    w = pos - lo
    for i in range(len(y)):
        a = np.interp(y[i], *inverses[lo[i]])
        b = np.interp(y[i], *inverses[hi[i]]) if hi[i] != lo[i] else a
        out[i] = (1 - w[i]) * a + w[i] * b
    return out


def sample_counts(expr, library_sizes, *, rng: np.random.Generator) -> np.ndarray:
    """Counts of cells with expression ``expr`` (cells x genes, per any total) at the given
    library sizes: ``c_g ~ Poisson(L m_g / sum_h m_h)`` (eq. 2). Rows without expression
    give zeros. Returns int64 counts."""
    m = np.asarray(expr, dtype=np.float64)
    lib = np.asarray(library_sizes, dtype=np.float64).reshape(-1)
    if m.ndim != 2 or len(lib) != m.shape[0]:
        raise ValueError("expr must be cells x genes with one library size per cell")
    if (m < 0).any() or (lib < 0).any():
        raise ValueError("expression and library sizes must be non-negative")
    total = m.sum(axis=1, keepdims=True)
    mu = np.divide(m * lib[:, None], total, out=np.zeros_like(m), where=total > 0)
    return rng.poisson(mu)


def log_normalize(counts, target_sum: float = 1e4) -> np.ndarray:
    """``log1p(c s / total)`` per cell (float32); cells without counts stay 0."""
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum(axis=1, keepdims=True)
    scaled = np.divide(c * target_sum, total, out=np.zeros_like(c), where=total > 0)
    return np.log1p(scaled).astype(np.float32)


def binomial_split(
    counts: torch.Tensor, p: torch.Tensor | float, *, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each UMI kept with probability ``p`` (a number, or one per cell): ``(kept, rest)``,
    independent Poisson samples of the same expression when the counts are Poisson."""
    c = torch.as_tensor(counts, dtype=torch.float32)
    prob = torch.as_tensor(p, dtype=torch.float32)
    prob = prob.reshape(-1, 1).expand_as(c) if prob.ndim else prob.expand_as(c)
    kept = torch.binomial(c, prob.contiguous(), generator=generator)
    return kept, c - kept


def poisson_deviance(mu, counts, *, floor: float = 1e-8):
    """Mean Poisson deviance per entry, ``2 (y log(y / mu) - (y - mu))``, of counts ``y``
    under expected counts ``mu`` (numpy arrays or tensors); 0 when ``mu == y``. ``mu`` is
    floored at ``floor`` (a zero prediction of a counted gene would be infinitely wrong)."""
    if isinstance(mu, torch.Tensor):
        m = mu.clamp_min(floor)
        y = torch.as_tensor(counts, dtype=m.dtype)
        term = torch.where(y > 0, y * torch.log(y.clamp_min(floor) / m), torch.zeros_like(m))
        return (2 * (term - (y - m))).mean()
    m = np.maximum(np.asarray(mu, dtype=np.float64), floor)
    y = np.asarray(counts, dtype=np.float64)
    term = np.where(y > 0, y * np.log(np.maximum(y, floor) / m), 0.0)
    return float(np.mean(2 * (term - (y - m))))
