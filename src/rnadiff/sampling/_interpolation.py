"""Where a request asks for a continuous value between measured ones (pure functions of the
covariate registry, the measured values and ``obs``).

A continuous covariate (time, dose) is interpolated between the values measured for the
cell's own categorical condition when it has at least two (e.g. the doses measured for that
drug), else between the values of every training cell; the sampling engine mixes the denoiser
at the two neighbours (:func:`rnadiff.sampling.interpolated_covariate`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from rnadiff.conditioning import _conditions as conditions
from rnadiff.conditioning._transfer import interpolation_neighbours
from rnadiff.data._covariates import CovariateRegistry

Measured = dict[str, list[float]]


def value_grids(
    registry: CovariateRegistry,
    measured: Measured,
    measured_within: dict[str, Measured],
    obs: pd.DataFrame,
) -> Iterator[tuple[str, np.ndarray, list[tuple[list[float], np.ndarray]]]]:
    """Per continuous covariate in ``obs``: ``(key, values, [(grid, cells), ...])``, the
    measured values each group of cells is interpolated between."""
    labels = None
    for key, values in measured.items():
        if key not in obs.columns:
            continue
        raw = pd.to_numeric(obs[key], errors="coerce").to_numpy(dtype=float)
        within = measured_within.get(key, {})
        if within and labels is None:
            rows = conditions.condition_rows(registry, obs)
            labels = np.array([conditions.condition_label(r) for r in rows], dtype=object)
        groups = []
        rest = np.ones(len(raw), dtype=bool)
        for label in set(labels) & set(within) if within else ():
            cells = labels == label
            groups.append((within[label], cells))
            rest &= ~cells
        if len(values) >= 2 and rest.any():
            groups.append((values, rest))
        yield key, raw, groups


def interpolation_plan(
    registry: CovariateRegistry,
    measured: Measured,
    measured_within: dict[str, Measured],
    obs: pd.DataFrame,
) -> dict[str, tuple[np.ndarray, ...]]:
    """For each continuous covariate with values strictly between measured ones that were
    not measured themselves: ``{key: (low, high, weight, where)}``, the encoded
    neighbouring measured values, the weight of ``high`` and the cells concerned.

    The measured values are those of the cell's own categorical condition when it has
    at least two (e.g. the doses measured for that drug in that cell type), else those
    of every training cell. The weight is linear in log dose for a dose, in the value
    otherwise. Values outside the measured range are left to the network
    (:func:`outside_range` names them)."""
    out = {}
    for key, raw, grids in value_grids(registry, measured, measured_within, obs):
        lo, hi = np.full(len(raw), np.nan), np.full(len(raw), np.nan)
        where = np.zeros(len(raw), dtype=bool)
        for grid, cells in grids:
            lo[cells], hi[cells], where[cells] = interpolation_neighbours(raw[cells], grid)
        if not where.any():
            continue
        lo, hi = np.where(where, lo, raw), np.where(where, hi, raw)
        frame = pd.DataFrame({key: np.concatenate([raw, lo, hi])})
        enc = registry.encode(frame, allow_missing=True)[key].reshape(3, -1)
        _, e_lo, e_hi = enc.astype(np.float64)
        if registry[key].log and (lo[where] > 0).all():  # linear in log dose
            v, a, b = (np.log(np.where(where, x, 1.0)) for x in (raw, lo, hi))
            weight = np.where(where, (v - a) / np.where(where, b - a, 1.0), 0.0)
        else:
            e_val = enc[0].astype(np.float64)
            weight = np.where(where, (e_val - e_lo) / np.where(where, e_hi - e_lo, 1.0), 0.0)
        out[key] = (
            e_lo.astype(np.float32),
            e_hi.astype(np.float32),
            weight.astype(np.float32),
            where,
        )
    return out


def outside_range(
    registry: CovariateRegistry,
    measured: Measured,
    measured_within: dict[str, Measured],
    obs: pd.DataFrame,
) -> dict[str, tuple[int, float, float]]:
    """``{key: (cells, low, high)}``: cells asked for a continuous value outside the range
    measured for their condition (or overall), with that range."""
    out = {}
    for key, raw, groups in value_grids(registry, measured, measured_within, obs):
        for grid, cells in groups:
            outside = cells & np.isfinite(raw) & ((raw < grid[0]) | (raw > grid[-1]))
            if registry[key].log:  # dose 0 is the control, not an extrapolation
                outside &= raw > 0
            if outside.any():
                n, lo, hi = out.get(key, (0, grid[0], grid[-1]))
                out[key] = (n + int(outside.sum()), min(lo, grid[0]), max(hi, grid[-1]))
    return out
