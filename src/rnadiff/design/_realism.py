"""Realism of generated cells: how far each one lies from real cells, relative to real cells."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors


def _cells(x, name: str, *, min_cells: int = 1) -> np.ndarray:
    a = np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a cells x features matrix, got shape {a.shape}")
    if a.shape[0] < min_cells:
        raise ValueError(f"{name} needs at least {min_cells} cells, got {a.shape[0]}")
    return a


def nearest_neighbor_ratio(
    generated,
    real,
    *,
    n_components: int = 50,
    max_real: int = 5000,
    seed: int = 0,
) -> tuple[np.ndarray, float]:
    """Per generated cell: distance to the nearest real cell over the typical real-to-real one.

    Both populations are projected on principal axes (scikit-learn's PCA) fitted on the real
    and generated cells pooled. The reference is the median, over real cells, of the distance
    from a real cell to its nearest *other* real cell; a ratio near 1 means a generated cell
    sits among real cells as closely as real cells sit among each other, and large ratios
    flag cells off the data manifold. (Axes fitted on the real cells alone also fit their own
    noise, which spreads them apart: new real cells of the same population then scored about
    0.8, Kang 2018 training cells split in two halves; in the pooled space about 1.0.)

    Parameters
    ----------
    generated, real
        Cells x genes (log-normalized), same genes.
    n_components
        Principal axes (fitted on ``real`` and ``generated`` together).
    max_real
        Real cells used (a seeded random subset beyond this), for speed.
    seed
        Seed of the subset and of the randomized PCA.

    Returns
    -------
    ratios, reference
        Ratios ``(n_generated,)`` and the median real-to-real nearest-neighbour distance.
    """
    gen = _cells(generated, "generated")
    ref = _cells(real, "real", min_cells=3)
    if gen.shape[1] != ref.shape[1]:
        raise ValueError(f"generated has {gen.shape[1]} genes, real {ref.shape[1]}")
    if ref.shape[0] > max_real:
        rng = np.random.default_rng(seed)
        ref = ref[rng.choice(ref.shape[0], size=max_real, replace=False)]
    # pooled: real and generated cells alike in the sample the axes are fitted on
    pooled = np.vstack([ref, gen])
    pca = PCA(n_components=min(n_components, *pooled.shape), random_state=seed).fit(pooled)
    r, g = pca.transform(ref), pca.transform(gen)
    own = NearestNeighbors(n_neighbors=2).fit(r).kneighbors(r)[0][:, 1]
    reference = float(np.median(own))
    if reference <= 0:
        raise ValueError("real cells contain duplicates only; the realism reference is 0")
    nearest = NearestNeighbors(n_neighbors=1).fit(r).kneighbors(g)[0][:, 0]
    return nearest / reference, reference
