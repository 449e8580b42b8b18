"""Realism of generated cells: how far each one lies from real cells, relative to real cells."""

from __future__ import annotations

import numpy as np
import torch

from rnadiff.evaluation._distances import _cells, fit_pca, project


def _nearest(a: np.ndarray, b: np.ndarray, *, exclude_self: bool, chunk: int = 1024) -> np.ndarray:
    """Distance from each row of ``a`` to its nearest row of ``b`` (``a is b``: other rows)."""
    bt = torch.as_tensor(b)
    out = np.empty(a.shape[0])
    for start in range(0, a.shape[0], chunk):
        d = torch.cdist(torch.as_tensor(a[start : start + chunk]), bt)
        if exclude_self:
            rows = torch.arange(d.shape[0])
            d[rows, rows + start] = float("inf")
        out[start : start + chunk] = d.min(dim=1).values.numpy()
    return out


def nearest_neighbor_ratio(
    generated,
    real,
    *,
    n_components: int = 50,
    max_real: int = 5000,
    seed: int = 0,
) -> tuple[np.ndarray, float]:
    """Per generated cell: distance to the nearest real cell over the typical real-to-real one.

    Both populations are projected on principal axes fitted on the real and generated cells
    pooled. The reference is the median, over real cells, of the distance from a real cell to
    its nearest *other* real cell; a ratio near 1 means a generated cell sits among real cells
    as closely as real cells sit among each other, and large ratios flag cells off the data
    manifold. (Axes fitted on the real cells alone also fit their own noise, which spreads
    them apart: new real cells of the same population then scored about 0.8, Kang 2018
    training cells split in two halves; in the pooled space about 1.0.)

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
    pca = fit_pca(np.vstack([ref, gen]), n_components=n_components, seed=seed)
    r, g = project(ref, pca), project(gen, pca)
    reference = float(np.median(_nearest(r, r, exclude_self=True)))
    if reference <= 0:
        raise ValueError("real cells contain duplicates only; the realism reference is 0")
    return _nearest(g, r, exclude_self=False) / reference, reference
