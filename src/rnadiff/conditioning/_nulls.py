"""The null ("unknown") value of each covariate, used for dropout and classifier-free guidance.

Condition tensors encode their own null: a categorical covariate is a multi-hot matrix
``(n_cells, n_tokens)`` whose all-zero row is null (a combination ``A+B`` has two ones, so sets
and single values share one form); a continuous covariate is a vector ``(n_cells,)`` whose NaN is
null. Every function here returns new tensors.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def null_like(value: torch.Tensor) -> torch.Tensor:
    """The null of a covariate tensor: zeros for multi-hot matrices, NaN for continuous vectors."""
    if value.ndim == 2:
        return torch.zeros_like(value)
    return torch.full_like(value, float("nan"))


def is_null(value: torch.Tensor) -> torch.Tensor:
    """Boolean ``(n_cells,)``: which cells have the null value of this covariate."""
    if value.ndim == 2:
        return value.abs().sum(dim=1) == 0
    return torch.isnan(value)


def drop_covariates(cond: dict[str, torch.Tensor] | None, keys: Iterable[str]) -> dict | None:
    """Return a copy of ``cond`` with the covariates ``keys`` set to null for every cell."""
    if cond is None:
        return None
    keys = set(keys)
    unknown = keys - set(cond)
    if unknown:
        raise KeyError(f"cannot drop unknown covariates {sorted(unknown)}; known: {sorted(cond)}")
    return {k: null_like(v) if k in keys else v for k, v in cond.items()}


def random_drop(
    cond: dict[str, torch.Tensor], p: float, *, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """Independently set each covariate of each cell to null with probability ``p``.

    Training on such conditions teaches the network every partial condition at once, so that
    classifier-free guidance can later be applied per covariate.
    """
    if p <= 0:
        return dict(cond)
    out = {}
    for key in sorted(cond):  # sorted: the random draws must not depend on dict order
        value = cond[key]
        drop = torch.rand(value.shape[0], generator=generator) < p
        shape = (-1, 1) if value.ndim == 2 else (-1,)
        out[key] = torch.where(drop.view(shape), null_like(value), value)
    return out
