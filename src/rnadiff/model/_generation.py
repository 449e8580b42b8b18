r"""Generated cells moved to the measured means (``generate(..., anchor=True)``).

Cells generated from noise carry the network's own generation bias: on Papalexi's measured
conditions their mean misses the training mean by about as much for the non-targeting cells as
for any knock-out (``benchmarks/results/studies/generation_anchor``). With :math:`\bar{x}(t)`
the training mean of a measured condition ``t`` (kept by :meth:`RNADiffusion.calibrate_means`;
:meth:`rnadiff.conditioning._anchors.Anchors.level`: covariates left unset, the measured
conditions that match, weighted by their cells):

- a **measured** condition's cells :math:`\hat{x}_i(t)` are shifted gene by gene,
  :math:`\max(0, \hat{x}_{ig}(t) + s_g)`, with :math:`s_g` such that their mean is
  :math:`\bar{x}_g(t)` (:func:`shift_to`): each keeps its own variation around the training
  mean, and values shifted below 0 become exact zeros, as real cells have;
- any **other** condition ``t`` in context ``c`` (a dose, combination, drug or context never
  measured) is decoded a second time from the same noise under the context's control,
  :math:`\hat{x}_i(0)`; both decodes are shifted by the control's generation bias,
  :math:`b_c = \bar{x}(c, 0) - \frac{1}{n}\sum_i \hat{x}_i(0)` (values below 0 set to 0),
  and the cells of ``t`` are corrected as counterfactuals of their control decodes: by the mean
  anchors of the measured conditions ``t`` is built from, relative to the control's own,
  :math:`r(t) - r(c, 0)` (``predict``'s sources are real cells and take :math:`r(t)`; the
  control decodes here already sit at the control's mean; :func:`rnadiff.conditioning.
  _anchors.anchor_cells` as in ``predict``), and a drug never measured is moved to the
  measured drugs' blend.

A context whose control was never measured, or a model without anchors, is left as the
network generates it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rnadiff.conditioning import _conditions as conditions
from rnadiff.conditioning._anchors import anchor_cells
from rnadiff.model import _unseen

if TYPE_CHECKING:
    from rnadiff.model._model import RNADiffusion
    from rnadiff.sampling._engine import SamplingEngine


def applies(model: RNADiffusion) -> bool:
    """Whether generation can be anchored: a perturbation with a control, and mean anchors
    with the training means (checkpoints before 2026-12-07 lack them)."""
    reg = model.registry
    a = model.anchors
    has_anchors = a is not None and len(a) > 0 and a.levels is not None
    return has_anchors and reg.perturbation_key is not None and reg.control is not None


def control_frame(registry, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every row's perturbation set to the control (its dose to 0)."""
    out = frame.copy()
    out[registry.perturbation_key] = registry.control
    if registry.dose_key is not None and registry.dose_key in out:
        out[registry.dose_key] = 0.0
    return out


def _shifted(x: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``x + shift``, negative values set to 0 (exact zeros, as real cells have)."""
    return np.maximum(x + shift, 0.0).astype(x.dtype)


def shift_to(x: np.ndarray, target: np.ndarray, iterations: int = 40) -> np.ndarray:
    """Each gene's shift ``s`` with ``mean(max(x + s, 0)) = target`` (``x``: cells x genes,
    ``target`` non-negative), by bisection between ``-max(x)`` (mean 0) and
    ``target - mean(x)`` (where no value needs clipping)."""
    x64 = x.astype(np.float64)
    target = np.maximum(np.asarray(target, dtype=np.float64), 0.0)
    lo = -x64.max(0)
    hi = np.maximum(target - x64.mean(0), lo)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        high = np.maximum(x64 + mid, 0.0).mean(0) > target
        hi, lo = np.where(high, mid, hi), np.where(high, lo, mid)
    return (lo + hi) / 2


def anchored(
    model: RNADiffusion,
    engine: SamplingEngine,
    obs: pd.DataFrame,
    plan,
    x_log: np.ndarray,
    decode_control: Callable[[], tuple[pd.DataFrame, np.ndarray]],
) -> tuple[np.ndarray, int]:
    """``x_log`` (cells of ``obs``) moved as the module doc says; ``decode_control()`` gives
    the same noise decoded under each cell's control (conditions, log expression), called
    only when a condition was never measured. Returns the cells and how many were moved."""
    from rnadiff.model._predict import mean_shifts

    registry = model.registry
    rows = conditions.given_condition_rows(registry, obs)  # None: unset
    values = np.full((len(obs), len(model.anchors.keys)), np.nan)
    for j, key in enumerate(model.anchors.keys):
        if key in obs:
            values[:, j] = pd.to_numeric(obs[key], errors="coerce").to_numpy(dtype=np.float64)
    # cells of one condition (categorical values and continuous ones) are moved together
    group, _ = pd.factorize(
        pd.Series([repr((r, v.tolist())) for r, v in zip(rows, values, strict=True)])
    )
    x_log = np.array(x_log, copy=True)
    moved = np.zeros(len(obs), dtype=bool)
    unmeasured = []
    for g in np.unique(group):  # measured conditions: their own level
        cells = group == g
        first = int(np.flatnonzero(cells)[0])
        found = model.anchors.level(registry, rows[first], values[first])
        if found is None:
            unmeasured.append(g)
            continue
        x_log[cells] = _shifted(x_log[cells], shift_to(x_log[cells], found))
        moved |= cells
    if not unmeasured:
        return x_log, int(moved.sum())
    obs_ctrl, x_ctrl = decode_control()
    x_ctrl = np.array(x_ctrl, copy=True)
    biased = np.zeros(len(obs), dtype=bool)
    for g in unmeasured:  # the control's generation bias, then the perturbation's anchors
        cells = group == g
        first = int(np.flatnonzero(cells)[0])
        found = model.anchors.level(registry, rows[first], values[first], control=True)
        if found is None:
            continue
        # the control decodes' generation bias, added (a shift solved to reach the control's
        # mean through zeros would push down genes the perturbation raises: Kang inner split,
        # Pearson delta top-100 0.95 -> 0.86; studies/generation_anchor)
        bias = found - x_ctrl[cells].mean(0)
        x_log[cells] = _shifted(x_log[cells], bias)
        x_ctrl[cells] = _shifted(x_ctrl[cells], bias)
        biased |= cells
    if biased.any():
        # the mean anchors relative to the control's decodes, which already sit at the
        # control's level: r(t) - r(control) (predict's source cells are real, and take r(t))
        shift, reference, where = mean_shifts(model, engine, obs_ctrl, obs, plan)
        own, _, known = model.anchors.shifts(registry, obs_ctrl, obs_ctrl)
        where = where & known & biased
        x_log = anchor_cells(x_log, shift - own, reference, where)
        x_new, _ = _unseen.moved(model, engine, obs_ctrl, obs, x_ctrl, x_log, True)
        x_log[biased] = x_new[biased]
    return x_log, int((moved | biased).sum())
