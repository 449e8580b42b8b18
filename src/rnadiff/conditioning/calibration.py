"""Effect calibration: how much a model's predicted perturbation effects must be scaled to
match the effects measured in its training data (pure functions on arrays)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

SCALE_RANGE = (0.5, 5.0)


def effect_scales(
    predicted: Mapping[str, np.ndarray],
    observed: Mapping[str, np.ndarray],
    *,
    bounds: tuple[float, float] = SCALE_RANGE,
) -> dict[str, float]:
    """Least-squares factor of each predicted mean effect onto the observed one.

    ``s_k = <observed_k, predicted_k> / <predicted_k, predicted_k>``, clipped to ``bounds``:
    the regression of the observed effect on the predicted one (through the origin), so noise
    in the observed training means does not bias the factor, whereas regressing the other way
    would shrink it. A predicted effect of exactly zero gets 1 (nothing to scale).

    Parameters
    ----------
    predicted, observed
        Mean change from control per perturbation (vectors over genes); the keys of
        ``predicted`` must be in ``observed``.
    bounds
        Smallest and largest factor.

    Returns
    -------
    dict
        ``{perturbation: factor}``.
    """
    low, high = bounds
    if not 0 < low <= 1 <= high:
        raise ValueError(f"bounds must satisfy 0 < low <= 1 <= high, got {bounds}")
    out = {}
    for k, p in predicted.items():
        p = np.asarray(p, dtype=np.float64)
        o = np.asarray(observed[k], dtype=np.float64)
        if p.shape != o.shape:
            raise ValueError(f"{k}: predicted {p.shape} and observed {o.shape} differ in shape")
        norm = float(p @ p)
        out[k] = 1.0 if norm == 0 else float(np.clip((o @ p) / norm, low, high))
    return out
