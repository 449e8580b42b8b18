"""The EDM denoising loss (Karras et al. 2022, eq. 8 and Table 1)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def edm_loss_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2`` (Table 1).

    It makes the effective target of the raw network unit-variance at every noise level.
    """
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def denoising_loss(
    denoiser: Callable[..., torch.Tensor],
    x0: torch.Tensor,
    sigma: torch.Tensor,
    noise: torch.Tensor,
    *,
    cond: dict[str, torch.Tensor] | None = None,
    sigma_data: float = 1.0,
) -> torch.Tensor:
    """Per-cell weighted denoising loss ``lambda(sigma) * ||D(x0 + sigma n) - x0||^2 / n_genes``.

    A denoiser that returns one estimate per ensemble member (shape ``(n_models, n_cells,
    n_genes)``) is scored member by member, and the members' losses averaged: each member
    learns to denoise on its own.

    Parameters
    ----------
    denoiser
        ``denoiser(x, sigma, cond) -> x0_hat``, shaped like ``x`` or ``(n_models, *x.shape)``.
    x0
        Clean profiles, shape ``(n_cells, n_genes)``.
    sigma
        Noise level per cell, shape ``(n_cells,)``.
    noise
        Standard normal noise shaped like ``x0``.
    cond
        Condition tensors passed through to the denoiser.
    sigma_data
        Standard deviation of the data the preconditioning assumes.

    Returns
    -------
    torch.Tensor
        Shape ``(n_cells,)``; average it for a minibatch loss.
    """
    x_noisy = x0 + sigma[:, None] * noise
    x0_hat = denoiser(x_noisy, sigma, cond)
    err = (x0_hat - x0).pow(2).mean(dim=-1)
    if err.dim() == 2:  # one row per ensemble member
        err = err.mean(dim=0)
    return edm_loss_weight(sigma, sigma_data) * err
