"""Planning where a condition never measured in training takes its denoiser from.

Pure functions on condition tuples and value grids; the model encodes their results and the
denoiser wrappers of :mod:`rnadiff.sampling._guidance` use them.

* A perturbation in a context (the other categorical covariates) where it was never measured
  takes its effect from the nearest context where it was (:func:`nearest_context_weights`),
  scaled by how far that context is (:func:`relative_transfer_distance`,
  :func:`distance_transfer_scale`).
* A continuous covariate between two measured values mixes the denoiser at those values
  (:func:`interpolation_neighbours`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np


def context_of(row: tuple, index: int) -> tuple:
    """A condition tuple without its perturbation (at ``index``): the cell's context."""
    return row[:index] + row[index + 1 :]


def measured_contexts(
    seen: Iterable[tuple], index: int, control: str
) -> tuple[list[tuple], dict[tuple, set]]:
    """The contexts where ``control`` was measured (sorted, complete ones only), and the
    perturbations measured in every context.

    Parameters
    ----------
    seen
        Condition tuples of the training cells (categorical covariates; ``None``: unset).
    index
        Position of the perturbation in the tuples.
    control
        The control perturbation.
    """
    measured: dict[tuple, set] = {}
    for row in seen:
        measured.setdefault(context_of(row, index), set()).add(row[index])
    contexts = sorted(c for c, perts in measured.items() if control in perts and None not in c)
    return contexts, measured


def _source_distances(
    row: tuple,
    index: int,
    contexts: Sequence[tuple],
    measured: Mapping[tuple, set],
    profile: Mapping[tuple, np.ndarray],
) -> tuple[list[int], np.ndarray]:
    """The contexts (positions in ``contexts``) where the perturbation of ``row`` was measured
    and the squared distance of ``profile`` from each to the row's own context."""
    ok = [j for j, c in enumerate(contexts) if row[index] in measured[c]]
    if not ok:
        return ok, np.zeros(0)
    target = profile[context_of(row, index)]
    return ok, np.array([((profile[contexts[j]] - target) ** 2).sum() for j in ok])


def nearest_context_weights(
    rows: Sequence[tuple],
    cells: Iterable[int],
    index: int,
    contexts: Sequence[tuple],
    measured: Mapping[tuple, set],
    profile: Mapping[tuple, np.ndarray],
) -> np.ndarray:
    """Weights ``(len(rows), len(contexts))``: for each of ``cells``, weight 1 on the measured
    context nearest to its own (squared distance of ``profile``) among those where its
    perturbation was measured, shared on ties; zero rows for the other cells and for cells
    whose perturbation was measured nowhere.
    """
    weights = np.zeros((len(rows), len(contexts)), dtype=np.float32)
    of_row: dict[tuple, np.ndarray] = {}  # cells of one condition share their weights
    for i in cells:
        if rows[i] not in of_row:
            ok, d2 = _source_distances(rows[i], index, contexts, measured, profile)
            w = np.zeros(len(contexts), dtype=np.float32)
            if ok:
                nearest = [j for j, d in zip(ok, d2, strict=True) if d <= d2.min()]
                w[nearest] = 1.0 / len(nearest)
            of_row[rows[i]] = w
        weights[i] = of_row[rows[i]]
    return weights


def relative_transfer_distance(
    rows: Sequence[tuple],
    cells: Iterable[int],
    index: int,
    contexts: Sequence[tuple],
    measured: Mapping[tuple, set],
    profile: Mapping[tuple, np.ndarray],
) -> np.ndarray:
    """How far each cell's nearest measured context is, relative to how far measured contexts
    usually are from one another.

    For cell ``i`` with perturbation ``p``: ``r_i = d_i / m_p``, where ``d_i`` is the squared
    distance of ``profile`` from the cell's context to the nearest context where ``p`` was
    measured (the one :func:`nearest_context_weights` takes the effect from), and ``m_p`` the
    median, over the contexts where ``p`` was measured, of each one's squared distance to its
    own nearest other such context (the typical spacing of the measured contexts). ``r < 1``:
    the source is closer than measured contexts usually are to each other (a near-twin, e.g.
    CD8 for CD4 T cells); ``r >= 1``: as far as usual or farther.

    Parameters
    ----------
    rows, cells, index, contexts, measured, profile
        As for :func:`nearest_context_weights`.

    Returns
    -------
    numpy.ndarray
        ``(len(rows),)`` float; NaN for cells not in ``cells``, for cells whose perturbation was
        measured nowhere, and where fewer than two contexts measured it (no spacing).
    """
    out = np.full(len(rows), np.nan)
    of_row: dict[tuple, float] = {}  # cells of one condition share their distance
    spacing: dict = {}

    def d2(a: tuple, b: tuple) -> float:
        return float(((profile[a] - profile[b]) ** 2).sum())

    for i in cells:
        if rows[i] not in of_row:
            pert = rows[i][index]
            ok, dist = _source_distances(rows[i], index, contexts, measured, profile)
            if pert not in spacing and len(ok) >= 2:
                own = [contexts[j] for j in ok]
                spacing[pert] = float(
                    np.median([min(d2(a, b) for b in own if b != a) for a in own])
                )
            m = spacing.get(pert, 0.0)
            of_row[rows[i]] = dist.min() / m if len(ok) >= 2 and m > 0 else np.nan
        out[i] = of_row[rows[i]]
    return out


def distance_transfer_scale(relative: np.ndarray, far: float) -> np.ndarray:
    """The ``compose`` scale of each cell from its :func:`relative_transfer_distance`.

    ``s = 1 + (far - 1) * min(1, r)``: the nearest context's effect as it is (``s = 1``) for a
    source as close as the target itself (``r = 0``), rising linearly to ``far`` for a source as
    far as measured contexts typically are from each other (``r >= 1``); ``far`` where ``r`` is
    NaN (no spacing to compare with). Chosen on inner folds of Kang 2018 and checked on
    simulated screens (user guide: benchmarks, transfer).

    Parameters
    ----------
    relative
        Relative distances, NaN where unknown.
    far
        The scale for a source at the typical spacing or farther.

    Returns
    -------
    numpy.ndarray
        Scales, the shape of ``relative``.
    """
    r = np.asarray(relative, dtype=float)
    out = 1.0 + (far - 1.0) * np.clip(np.nan_to_num(r, nan=1.0), 0.0, 1.0)
    return out


def transfer_records(
    rows: Sequence[tuple],
    index: int,
    contexts: Sequence[tuple],
    weights: np.ndarray,
    relative: np.ndarray,
    scales: np.ndarray,
    interaction: np.ndarray | None = None,
) -> dict[str, dict]:
    """One record per transferred condition (a row with weight on some context), keyed
    ``"<perturbation> in <context>"``: its ``perturbation``, ``context`` and ``source``
    context(s) as text (values of several covariates joined by ``"/"``, tied sources by
    ``" & "``), ``relative_distance`` (NaN if unknown), ``scale``, number of ``cells`` and
    what was taken from the source: ``"transferred"`` is ``"interaction"`` for the cells of
    ``interaction`` (a combination whose parts are taken in its own context; scale 1) and
    ``"effect"`` otherwise; strings and numbers only, so the record can be written to
    ``.h5ad``."""

    def label(context: tuple) -> str:
        return "/".join(str(v) for v in context)

    inter = np.zeros(len(rows), dtype=bool) if interaction is None else interaction
    out: dict[str, dict] = {}
    for i in np.flatnonzero(weights.sum(axis=1) > 0):
        row = rows[i]
        key = f"{row[index]} in {label(context_of(row, index))}"
        if key not in out:
            out[key] = {
                "perturbation": str(row[index]),
                "context": label(context_of(row, index)),
                "source": " & ".join(label(contexts[j]) for j in np.flatnonzero(weights[i])),
                "relative_distance": float(relative[i]),
                "scale": 1.0 if inter[i] else float(scales[i]),
                "transferred": "interaction" if inter[i] else "effect",
                "cells": 0,
            }
        out[key]["cells"] += 1
    return out


def interpolation_neighbours(
    values: np.ndarray, grid: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The measured neighbours of values that lie strictly between measured values.

    Parameters
    ----------
    values
        Requested values (NaN: unset).
    grid
        The measured values, sorted, at least two.

    Returns
    -------
    tuple
        ``(low, high, where)``: the neighbouring grid values of each value and whether it is
        interpolated (inside the grid's range, not on a grid value, not NaN).
    """
    values = np.asarray(values, dtype=float)
    grid = np.asarray(grid, dtype=float)
    near = np.isclose(values[:, None], grid[None, :], rtol=1e-6, atol=1e-9).any(axis=1)
    where = np.isfinite(values) & ~near & (values > grid[0]) & (values < grid[-1])
    upper = np.clip(np.searchsorted(grid, np.nan_to_num(values, nan=grid[0])), 1, len(grid) - 1)
    return grid[upper - 1], grid[upper], where
