"""Distances between populations of cells: pure functions on arrays (cells x features).

The population distances (:func:`energy_distance`, :func:`mmd_rbf`, :func:`knn_auc`) work in
whatever space they are given. Gene space has thousands of mostly noisy dimensions, so callers
first project the two populations into a PCA space (:func:`fit_pca`, :func:`project`). Fit it
on both populations pooled (as :func:`rnadiff.evaluation._metrics.population_metrics` does), or on
cells that are in neither: principal axes fitted on a few hundred cells also fit those cells'
own noise, so a population that was in the fit lies measurably far from a new sample of the
same distribution.

The numerical work is scikit-learn's (PCA, nearest neighbours, ROC AUC, chunked pairwise
distances, so memory stays bounded); time is quadratic in the number of cells (subsample large
populations first).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.spatial.distance import pdist
from sklearn.decomposition import PCA
from sklearn.metrics import pairwise_distances_chunked, roc_auc_score
from sklearn.neighbors import NearestNeighbors

_BLOCK_MIB = 32  # memory of one block of a pairwise distance matrix


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
    b: np.ndarray | None = None,
    fn: Callable[[np.ndarray], np.ndarray] | None = None,
    *,
    metric: str = "euclidean",
) -> float:
    """``sum_ij fn(d(a_i, b_j))`` (``fn`` default: identity; ``b`` default: ``a``), blockwise.

    Within one population (``b=None``) the self-pairs are exactly 0 (scikit-learn sets the
    diagonal to 0, whatever rounding its Euclidean distances have elsewhere).
    """
    total = 0.0
    for d in pairwise_distances_chunked(a, b, metric=metric, working_memory=_BLOCK_MIB):
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
        :class:`sklearn.decomposition.PCA` with ``"exact"``: ``svd_solver="full"``;
        ``"randomized"``: ``svd_solver="randomized"`` (Halko, Martinsson & Tropp 2011, with
        scikit-learn's power iterations). ``"auto"``: randomized when the matrix has more than
        1000 cells and genes and ``n_components`` is under a quarter of that, else exact.

    Returns
    -------
    PCASpace
        Mean, components (sign fixed so each axis' largest loading is positive, which makes
        the result reproducible across SVD back-ends) and explained variance.
    """
    x = _cells(real_reference, "real_reference", min_cells=2)
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    if method not in ("auto", "exact", "randomized"):
        raise ValueError(f"unknown method {method!r}")
    q = min(n_components, *x.shape)
    small = min(x.shape)
    randomized = method == "randomized" or (method == "auto" and small > 1000 and q < small // 4)
    pca = PCA(q, svd_solver="randomized" if randomized else "full", random_state=seed).fit(x)
    vt = pca.components_
    signs = np.sign(vt[np.arange(q), np.argmax(np.abs(vt), axis=1)])
    vt = vt * np.where(signs == 0, 1.0, signs)[:, None]
    return PCASpace(mean=pca.mean_, components=vt, explained_variance=pca.explained_variance_)


def project(x, pca: PCASpace) -> np.ndarray:
    """Coordinates of cells ``x`` (cells x genes) in ``pca``: ``(x - mean) @ components.T``."""
    a = _dense(x)
    if a.shape[-1] != pca.mean.shape[0]:
        raise ValueError(f"x has {a.shape[-1]} genes, the PCA space {pca.mean.shape[0]}")
    return (a - pca.mean) @ pca.components.T


# --- population distances --------------------------------------------------------------------

EnergyKind = Literal["u", "pertpy", "scperturb"]

# kind -> (distance between cells, whether the within-population means include the self-pairs)
ENERGY_KINDS: dict[str, tuple[str, bool]] = {
    "u": ("euclidean", False),  # U-statistic: unbiased, about 0 for one distribution
    "pertpy": ("euclidean", True),  # V-statistic of pertpy (since PR #733) and cell-eval
    "scperturb": ("sqeuclidean", True),  # scPerturb, pertpy before PR #733: 2 |mean x - mean y|^2
}


def energy_distance(x, y, *, kind: EnergyKind = "u") -> float:
    """Energy distance between two populations: ``2 E d(X, Y) - E d(X, X') - E d(Y, Y')``.

    Székely & Rizzo 2013 (J. Stat. Plan. Inference), as used for perturbations by
    Peidli et al. 2024 (scPerturb, Nat. Methods).

    Parameters
    ----------
    x, y
        Cells x features, in one space (e.g. :func:`project` ed); at least 2 cells each for
        ``kind="u"``, 1 otherwise.
    kind
        ``"u"``: Euclidean ``d``; the cross term averages all ``n_x * n_y`` pairs, the within
        terms the distinct pairs ``i != j`` only (U-statistics), so the estimate is unbiased
        for the population value: about 0, and possibly slightly negative, for two samples
        of one distribution. ``"pertpy"``: Euclidean ``d``, every mean over all pairs, the
        zero self-pairs included (V-statistics), as ``pertpy.tools.Distance("edistance")``
        computes it since scverse/pertpy PR #733 (2025) and cell-eval's ``edistance``; it
        exceeds ``"u"`` by ``W_x / n_x + W_y / n_y`` (``W``: mean distance between distinct
        cells), so it is positive even for two samples of one distribution and shrinks with
        the number of cells. ``"scperturb"``: V-statistics of squared Euclidean ``d``, the
        scPerturb package's default and pertpy's before PR #733; it equals
        ``2 |mean(x) - mean(y)|^2`` exactly, i.e. it only compares means.

    Returns
    -------
    float
        The energy distance. Two point masses at distance ``r`` give ``2 r`` (``2 r^2`` for
        ``"scperturb"``) whatever the kind.
    """
    return _energy_distances(x, y, kinds=(kind,))[kind]


def _energy_distances(x, y, *, kinds: Sequence[str]) -> dict[str, float]:
    """:func:`energy_distance` of several kinds, sharing the pairwise sums they have in common."""
    unknown = [k for k in kinds if k not in ENERGY_KINDS]
    if unknown:
        raise ValueError(f"kind must be one of {sorted(ENERGY_KINDS)}, got {unknown[0]!r}")
    min_cells = 2 if "u" in kinds else 1
    a = _cells(x, "x", min_cells=min_cells)
    b = _cells(y, "y", min_cells=min_cells)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x has {a.shape[1]} features, y {b.shape[1]}")
    n, m = len(a), len(b)
    sums: dict[str, tuple[float, float, float]] = {}
    out = {}
    for kind in kinds:
        metric, self_pairs = ENERGY_KINDS[kind]
        if metric not in sums:  # the self-pairs add 0 to the within sums
            sums[metric] = tuple(
                _pairwise_sum(u, v, metric=metric) for u, v in ((a, b), (a, None), (b, None))
            )
        cross, within_a, within_b = sums[metric]
        pairs_a, pairs_b = (n * n, m * m) if self_pairs else (n * (n - 1), m * (m - 1))
        out[kind] = 2 * cross / (n * m) - within_a / pairs_a - within_b / pairs_b
    return out


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
    d = pdist(a)
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

    def mean_k(u: np.ndarray, v: np.ndarray | None) -> float:
        pairs = len(u) * len(u if v is None else v)
        return _pairwise_sum(u, v, kernel, metric="sqeuclidean") / pairs

    return max(0.0, mean_k(a, None) + mean_k(b, None) - 2 * mean_k(a, b))


def knn_auc(real, generated, *, k: int = 10, max_cells: int = 2000, seed: int = 0) -> float:
    """How well a k-nearest-neighbour classifier tells generated from real cells (ROC AUC).

    A two-sample classifier test (Lopez-Paz & Oquab 2017, ICLR) with a leave-one-out kNN
    classifier: the larger population is subsampled to the size of the smaller (balanced
    classes, at most ``max_cells`` each); every cell is scored by the fraction of its ``k``
    nearest other cells (Euclidean, :class:`sklearn.neighbors.NearestNeighbors`) that are
    generated; :func:`sklearn.metrics.roc_auc_score` of these scores, real vs generated (ties
    count one half, as in the Mann-Whitney U statistic).

    Parameters
    ----------
    real, generated
        Cells x features (at least 2 cells each), in one space.
    k
        Neighbours per cell (capped at the number of other cells).
    max_cells
        Cells per population at most; more are subsampled.
    seed
        Seed of the subsampling and of the cell order, which breaks distance ties.

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
    is_gen = np.repeat([0, 1], n)
    order = rng.permutation(2 * n)  # neighbour searches break ties by position: randomize it
    pool, is_gen = pool[order], is_gen[order]
    k = min(k, 2 * n - 1)
    # kneighbors() without query points leaves each cell out of its own neighbours
    nearest = NearestNeighbors(n_neighbors=k).fit(pool).kneighbors(return_distance=False)
    return float(roc_auc_score(is_gen, is_gen[nearest].mean(axis=1)))
