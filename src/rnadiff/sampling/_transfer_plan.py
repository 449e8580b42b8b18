"""How the cells of a request reach contexts where their perturbation was never measured:
the transfer mode, its scale and the cells it applies to (the sampling engine finds the cells
and the source contexts; :mod:`rnadiff.conditioning._transfer` has the pure functions)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rnadiff._errors import InputError
from rnadiff.conditioning import _conditions as conditions
from rnadiff.conditioning._transfer import distance_transfer_scale, transfer_records

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
    found = engine.context_plan(plan.mask, rows)
    if found is None:
        return {}
    contexts, weights, relative = found
    ip = conditions.perturbation_index(engine.registry)
    interaction = engine.interaction_cells(obs, plan.mask)
    scales = plan.cell_scales(relative)
    return transfer_records(rows, ip, contexts, weights, relative, scales, interaction)
