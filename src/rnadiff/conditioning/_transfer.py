"""Planning where a condition never measured in training takes its denoiser from.

Pure functions on condition tuples and value grids; the model encodes their results and the
denoiser wrappers of :mod:`rnadiff.sampling._guidance` use them.

* A perturbation in a context (the other categorical covariates) where it was never measured
  takes its effect from the nearest context where it was (:func:`nearest_context_weights`).
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
    for i in cells:
        ok = [j for j, c in enumerate(contexts) if rows[i][index] in measured[c]]
        if not ok:
            continue
        target = profile[context_of(rows[i], index)]
        d2 = np.array([((profile[contexts[j]] - target) ** 2).sum() for j in ok])
        nearest = [j for j, d in zip(ok, d2, strict=True) if d <= d2.min()]
        weights[i, nearest] = 1.0 / len(nearest)
    return weights


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
