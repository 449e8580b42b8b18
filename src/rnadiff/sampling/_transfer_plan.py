"""How the cells of a request reach contexts where their perturbation was never measured:
the transfer mode, its scale, and the source contexts ``"compose"`` takes each effect from
(:func:`context_plan`; the sampling engine finds the cells it applies to;
:mod:`rnadiff.conditioning._transfer` has the pure functions)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from rnadiff._errors import InputError
from rnadiff.conditioning import _conditions as conditions
from rnadiff.conditioning._transfer import (
    context_of,
    distance_transfer_scale,
    measured_contexts,
    nearest_context_weights,
    relative_transfer_distance,
    transfer_records,
)

if TYPE_CHECKING:
    from rnadiff.sampling._engine import SamplingEngine

TRANSFER_SCALES = {"guide": 3.0, "compose": 1.5}  # chosen on Kang 2018 folds (docs: benchmarks)
# the largest scale a user may ask for: far beyond it every output is off the data, and large
# enough scales overflow to non-finite cells
TRANSFER_MAX = 20.0


@dataclass(frozen=True)
class TransferPlan:
    """How the cells of a request reach contexts where their perturbation was never measured.

    Attributes
    ----------
    mask
        Boolean per cell: the cells the transfer applies to.
    mode
        ``"compose"``, ``"guide"`` or ``"none"``.
    scale
        Strength of the transfer (``None`` for ``"none"``); with ``by_distance``, the scale
        of a source context at the typical spacing of measured contexts or farther.
    by_distance
        ``"compose"`` only: scale each cell's transfer by how far its source context is
        (:func:`rnadiff.conditioning.distance_transfer_scale`), from 1 for a near-twin up to
        ``scale``; the default when no scale is given.
    """

    mask: np.ndarray
    mode: str
    scale: float | None
    by_distance: bool = False

    def cell_scales(self, relative: np.ndarray) -> np.ndarray:
        """Each cell's ``"compose"`` scale from its relative source distance (NaN: unknown):
        :func:`rnadiff.conditioning.distance_transfer_scale` with ``by_distance``, else
        ``scale`` for every cell."""
        if self.by_distance:
            return distance_transfer_scale(relative, self.scale)
        return np.full(len(relative), self.scale)


def transfer_scale(transfer: str, scale: float | None) -> float | None:
    """The scale of a transfer mode: ``scale``, checked, or the mode's default."""
    if scale is not None and not 0 <= float(scale) <= TRANSFER_MAX:
        raise InputError(
            f"transfer_scale={scale} is out of range: it must be a number from 0 to {TRANSFER_MAX}"
        )
    return TRANSFER_SCALES.get(transfer) if scale is None else float(scale)


def transfer_sources(
    engine: SamplingEngine, obs: pd.DataFrame | None, plan: TransferPlan
) -> dict[str, dict]:
    """For the output's record: each condition ``engine`` transfers with ``plan`` (perturbation
    and context), the measured context(s) ``"compose"`` took its effect (or, for a combination
    whose parts were measured in its context, its interaction) from, the relative distance and
    the scale used (:func:`rnadiff.conditioning._transfer.transfer_records`)."""
    if plan.mode != "compose" or obs is None or not plan.mask.any():
        return {}
    rows = conditions.condition_rows(engine.registry, obs)
    found = context_plan(engine, plan.mask, rows)
    if found is None:
        return {}
    contexts, weights, relative = found
    ip = conditions.perturbation_index(engine.registry)
    interaction = engine.interaction_cells(obs, plan.mask)
    scales = plan.cell_scales(relative)
    return transfer_records(rows, ip, contexts, weights, relative, scales, interaction)


def context_plan(
    engine: SamplingEngine, mask: np.ndarray, rows: list[tuple]
) -> tuple[list[tuple], np.ndarray, np.ndarray] | None:
    """Where ``"compose"`` takes each transferred cell's perturbation effect from: the
    measured context (values of the other categorical covariates, with both that perturbation
    and the control in training) nearest to the cell's own context, by each context's control
    profile (:func:`context_profiles`); ties share the weight. Returns (the measured contexts,
    weights ``(n_cells, n_contexts)``, each cell's
    :func:`rnadiff.conditioning.relative_transfer_distance`), or None when no cell has such a
    context (the composition then uses the marginal effect)."""
    registry = engine.registry
    ip = conditions.perturbation_index(registry)
    contexts, measured = measured_contexts(engine.seen, ip, registry.control)
    cells = [i for i in np.flatnonzero(mask) if None not in context_of(rows[i], ip)]
    if not contexts or not cells:
        return None
    own = sorted({context_of(rows[i], ip) for i in cells} - set(contexts))
    everyone = contexts + own
    profile = dict(zip(everyone, context_profiles(engine, everyone), strict=True))
    weights = nearest_context_weights(rows, cells, ip, contexts, measured, profile)
    if not weights.any():
        return None
    relative = relative_transfer_distance(rows, cells, ip, contexts, measured, profile)
    return contexts, weights, relative


def context_profiles(engine: SamplingEngine, contexts: list[tuple]) -> np.ndarray:
    """Each context's control profile in the model's space: the training means of its
    control cells where the engine's ``context_profiles`` is "data" and every context has
    them (:func:`measured_profiles`), else the network's mean control profile (the denoised
    estimate from pure noise)."""
    ip = conditions.perturbation_index(engine.registry)
    found = measured_profiles(engine, contexts, ip, engine.registry.control)
    if found is not None:
        return found
    pkey = engine.registry.perturbation_key
    others = [c.key for c in engine.registry.covariates if c.categorical and c.key != pkey]
    frame = pd.DataFrame(contexts, columns=others).assign(**{pkey: engine.registry.control})
    n = len(contexts)
    with torch.no_grad():
        return engine.network(
            torch.zeros(n, engine.n_genes),
            torch.full((n,), float(engine.diffusion.sigma_max)),
            engine.cond(frame, allow_missing=True),
        ).numpy()


def measured_profiles(
    engine: SamplingEngine, contexts: list[tuple], ip: int, control: str
) -> np.ndarray | None:
    """Each context's control profile in the model's space, from the training mean of its
    control cells (:meth:`rnadiff.conditioning._anchors.Anchors.level`); None when the
    engine's ``context_profiles`` is "network" or a context has no measured control. The
    network's estimate from pure noise (the alternative) is an extrapolation: training rarely
    reaches ``sigma_max``, and on Kang 2018 it moved the relative distance of the same two
    cell types from 0.88 to 0.63 between one network and an ensemble of three
    (benchmarks/results/studies/ensemble)."""
    anchors = engine.anchors
    if engine.context_profiles != "data" or anchors is None:
        return None
    unset = np.full(len(anchors.keys), np.nan)
    out = []
    for c in contexts:
        level = anchors.level(engine.registry, (*c[:ip], control, *c[ip:]), unset, control=True)
        if level is None:
            return None
        out.append(engine.to_model(level))
    return np.stack(out)
