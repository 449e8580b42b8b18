"""Baselines that return populations of cells, so that every metric applies to them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def control_baseline(source: np.ndarray) -> np.ndarray:
    """Predict no change: the source (control) cells as they are."""
    return np.array(source, dtype=np.float32, copy=True)


def additive_baseline(source: np.ndarray, shifts: Sequence[np.ndarray]) -> np.ndarray:
    """Source cells plus the mean perturbation shift seen in other contexts.

    Parameters
    ----------
    source
        Control cells of the target context (log-normalized).
    shifts
        Per other context, ``mean(perturbed) - mean(control)`` of the log values; averaged with
        equal weight per context. Values are clipped at 0 (log1p of a non-negative value).
    """
    if not len(shifts):
        raise ValueError("the additive baseline needs at least one context with both conditions")
    shift = np.mean(np.stack(shifts), axis=0)
    return np.clip(np.asarray(source, dtype=np.float32) + shift, 0, None).astype(np.float32)
