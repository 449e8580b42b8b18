"""Distances between populations of cells: pure functions on arrays (cells x features).

The population distances (:func:`energy_distance`, :func:`mmd_rbf`, :func:`knn_auc`) work in
whatever space they are given. Gene space has thousands of mostly noisy dimensions, so callers
first project the two populations into a PCA space (:func:`fit_pca`, :func:`project`). Fit it
on both populations pooled (as :func:`rnadiff.evaluation._metrics.population_metrics` does), or on
cells that are in neither: principal axes fitted on a few hundred cells also fit those cells'
own noise, so a population that was in the fit lies measurably far from a new sample of the
same distribution.

All pairwise computations are blockwise, so memory stays bounded; time is quadratic in the
number of cells (subsample large populations first).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats
from scipy.spatial.distance import cdist

_BLOCK_ENTRIES = 2**22  # entries of one block of a pairwise matrix (32 MiB of float64)


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float64)


def _cells(x, name: str, *, min_cells: int = 1) -> np.ndarray:
    a = _dense(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a cells x features matrix, got shape {a.shape}")
    if a.shape[0] < min_cells:
        raise ValueError(f"{name} needs at least {min_cells} cells, got {a.shape[0]}")
    return a


def _pairwise_sum(
    a: np.ndarray,
    b: np.ndarray,
    fn: Callable[[np.ndarray], np.ndarray] | None = None,
    *,
    metric: str = "euclidean",
) -> float:
    """``sum_ij fn(d(a_i, b_j))`` (``fn`` default: identity) without holding the whole matrix."""
    rows = max(1, _BLOCK_ENTRIES // max(1, len(b)))
    total = 0.0
    for i in range(0, len(a), rows):
        d = cdist(a[i : i + rows], b, metric)
        total += float((d if fn is None else fn(d)).sum())
    return total


# --- PCA space fitted on real cells ----------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PCASpace:
    """A linear projection ``(x - mean) @ components.T`` fitted on reference cells."""

    mean: np.ndarray  # (n_genes,) gene means of the reference cells
    components: np.ndarray  # (n_components, n_genes), orthonormal rows, by decreasing variance
    explained_variance: np.ndarray  # (n_components,) variance of the reference along each axis

    @property
    def n_components(self) -> int:
        return self.components.shape[0]


def fit_pca(
    real_reference,
    *,
    n_components: int = 50,
    seed: int = 0,
    method: Literal["auto", "exact", "randomized"] = "auto",
) -> PCASpace:
    """Fit principal axes (on real cells, or on the populations to be compared, pooled).

    Parameters
    ----------
    real_reference
        Real cells x genes (log-normalized), e.g. real perturbed and real control cells stacked.
    n_components
        Number of axes; at most ``min(n_cells, n_genes)``, the excess is dropped.
    seed
        Seed of the randomized SVD (unused by the exact SVD).
    method
        ``"exact"``: full thin SVD. ``"randomized"``: Halko, Martinsson & Tropp 2011, Alg. 4.4
        (4 power iterations, 10 extra dimensions). ``"auto"``: randomized when the matrix has
        more than 1000 cells and genes and ``n_components`` is under a quarter of that.

    Returns
    -------
    PCASpace
        Mean, components (sign fixed so each axis' largest loading is positive, which makes
        the result reproducible across SVD back-ends) and explained variance.
    """
    x = _cells(real_reference, "real_reference", min_cells=2)
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    q = min(n_components, *x.shape)
    mean = x.mean(axis=0)
    xc = x - mean
    small = min(x.shape)
    if method == "randomized" or (method == "auto" and small > 1000 and q < small // 4):
        s, vt = _randomized_svd(xc, q, seed=seed)
    elif method in ("exact", "auto"):
        _, s, vt = np.linalg.svd(xc, full_matrices=False)
        s, vt = s[:q], vt[:q]
    else:
        raise ValueError(f"unknown method {method!r}")
    signs = np.sign(vt[np.arange(q), np.argmax(np.abs(vt), axis=1)])
    vt = vt * np.where(signs == 0, 1.0, signs)[:, None]
    return PCASpace(mean=mean, components=vt, explained_variance=s**2 / (x.shape[0] - 1))


def _randomized_svd(x: np.ndarray, q: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    k = min(q + 10, *x.shape)
    basis, _ = np.linalg.qr(x @ rng.standard_normal((x.shape[1], k)))
    for _ in range(4):  # power iterations sharpen a slowly decaying spectrum
        basis, _ = np.linalg.qr(x.T @ basis)
        basis, _ = np.linalg.qr(x @ basis)
    _, s, vt = np.linalg.svd(basis.T @ x, full_matrices=False)
    return s[:q], vt[:q]


def project(x, pca: PCASpace) -> np.ndarray:
    """Coordinates of cells ``x`` (cells x genes) in ``pca``: ``(x - mean) @ components.T``."""
    a = _dense(x)
    if a.shape[-1] != pca.mean.shape[0]:
        raise ValueError(f"x has {a.shape[-1]} genes, the PCA space {pca.mean.shape[0]}")
    return (a - pca.mean) @ pca.components.T


# --- population distances --------------------------------------------------------------------


def energy_distance(x, y) -> float:
    """Energy distance between two populations, with Euclidean distances between cells.

    Székely & Rizzo 2013 (J. Stat. Plan. Inference), as used for perturbations by
    Peidli et al. 2024 (scPerturb, Nat. Methods):
    ``2 E|X - Y| - E|X - X'| - E|Y - Y'|``.

    Parameters
    ----------
    x, y
        Cells x features (at least 2 cells each), in one space (e.g. :func:`project` ed).

    Returns
    -------
    float
        The cross term averages all ``n_x * n_y`` pairs; the within terms average the distinct
        pairs ``i != j`` only (U-statistics), so the estimate is unbiased for the population
        value: about 0, and possibly slightly negative, for two samples of one distribution.
        Two point masses at distance ``d`` give exactly ``2 d``. pertpy and cell-eval include
        the self-pairs in the within terms, and some versions use squared distances, so their
        numbers are not directly comparable.
    """
    a = _cells(x, "x", min_cells=2)
    b = _cells(y, "y", min_cells=2)
    n, m = len(a), len(b)
    # cdist is exact on the diagonal, so the self-pairs add 0 to the within sums
    cross = _pairwise_sum(a, b) / (n * m)
    within_a = _pairwise_sum(a, a) / (n * (n - 1))
    within_b = _pairwise_sum(b, b) / (m * (m - 1))
    return 2 * cross - within_a - within_b


def median_bandwidths(
    x, *, scales: Sequence[float] = (0.5, 1.0, 2.0, 4.0), max_cells: int = 1000
) -> np.ndarray:
    """RBF bandwidths: the median heuristic times ``scales``.

    The median is over the nonzero Euclidean distances between distinct cells of ``x`` (at
    most ``max_cells`` evenly spaced cells, so it is deterministic); 1.0 when all cells
    coincide (every bandwidth then gives the same kernel values on them).
    """
    a = _cells(x, "x")
    a = a[np.linspace(0, len(a) - 1, min(len(a), max_cells)).astype(int)]
    d = cdist(a, a)[np.triu_indices(len(a), k=1)]
    d = d[d > 0]
    median = float(np.median(d)) if d.size else 1.0
    return median * np.asarray(scales, dtype=np.float64)


def mmd_rbf(x, y, *, bandwidths: Sequence[float] | None = None) -> float:
    """Squared maximum mean discrepancy with a mixture of RBF kernels (biased V-statistic).

    Gretton et al. 2012 (JMLR), the biased estimate ``MMD_b^2``, with
    ``k(a, b) = mean_s exp(-|a - b|^2 / (2 s^2))`` over the bandwidths ``s``.

    Parameters
    ----------
    x, y
        Cells x features (at least 1 cell each), in one space.
    bandwidths
        Kernel bandwidths ``s`` (Euclidean units). Default: :func:`median_bandwidths` of the
        pooled cells, i.e. the median distance times (0.5, 1, 2, 4). The pooled default
        depends on ``x``; to compare several predictions against the same real cells under
        one kernel, pass ``median_bandwidths(real)``.

    Returns
    -------
    float
        ``mean k(x, x') + mean k(y, y') - 2 mean k(x, y)`` over all pairs, self-pairs
        included: never negative, exactly 0 for identical populations, at most 2. Biased
        upwards by ``O(1/n)`` for two samples of one distribution.
    """
    a, b = _cells(x, "x"), _cells(y, "y")
    pooled = np.vstack([a, b])
    s = median_bandwidths(pooled) if bandwidths is None else np.asarray(bandwidths, dtype=float)
    if s.ndim != 1 or not s.size or np.any(s <= 0):
        raise ValueError(f"bandwidths must be a non-empty list of positive numbers, got {s}")
    gammas = 1.0 / (2.0 * s**2)

    def kernel(sq: np.ndarray) -> np.ndarray:
        return np.mean([np.exp(-g * sq) for g in gammas], axis=0)

    def mean_k(u: np.ndarray, v: np.ndarray) -> float:
        return _pairwise_sum(u, v, kernel, metric="sqeuclidean") / (len(u) * len(v))

    return max(0.0, mean_k(a, a) + mean_k(b, b) - 2 * mean_k(a, b))


def knn_auc(real, generated, *, k: int = 10, max_cells: int = 2000, seed: int = 0) -> float:
    """How well a k-nearest-neighbour classifier tells generated from real cells (ROC AUC).

    A two-sample classifier test (Lopez-Paz & Oquab 2017, ICLR) with a leave-one-out kNN
    classifier: the larger population is subsampled to the size of the smaller (balanced
    classes, at most ``max_cells`` each); every cell is scored by the fraction of its ``k``
    nearest other cells (Euclidean) that are generated; the AUC of these scores, real vs
    generated, comes from the Mann-Whitney U statistic (ties count one half).

    Parameters
    ----------
    real, generated
        Cells x features (at least 2 cells each), in one space.
    k
        Neighbours per cell (capped at the number of other cells).
    max_cells
        Cells per population at most; more are subsampled.
    seed
        Seed of the subsampling and of the order that breaks distance ties.

    Returns
    -------
    float
        0.5: indistinguishable; 1: separable. Values well under 0.5 mean generated cells sit
        closer to real cells than real cells to each other, as copies of real cells do
        (each copy's nearest neighbour is its real twin).
    """
    a = _cells(real, "real", min_cells=2)
    b = _cells(generated, "generated", min_cells=2)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rng = np.random.default_rng(seed)
    n = min(len(a), len(b), max_cells)
    pool = np.vstack([a[rng.permutation(len(a))[:n]], b[rng.permutation(len(b))[:n]]])
    is_gen = np.repeat([0.0, 1.0], n)
    order = rng.permutation(2 * n)  # argpartition breaks ties by position: randomize it
    pool, is_gen = pool[order], is_gen[order]
    k = min(k, 2 * n - 1)
    score = np.empty(2 * n)
    rows = max(1, _BLOCK_ENTRIES // (2 * n))
    for i in range(0, 2 * n, rows):
        d = cdist(pool[i : i + rows], pool, "sqeuclidean")
        d[np.arange(len(d)), np.arange(i, i + len(d))] = np.inf  # leave the cell itself out
        nearest = np.argpartition(d, k - 1, axis=1)[:, :k]
        score[i : i + rows] = is_gen[nearest].mean(axis=1)
    ranks = stats.rankdata(score)
    u = ranks[is_gen == 1].sum() - n * (n + 1) / 2
    return float(u / (n * n))
