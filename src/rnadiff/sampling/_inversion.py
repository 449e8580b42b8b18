"""Deterministic encoding of data into noise by integrating the probability-flow ODE upward."""

from __future__ import annotations

import torch

from rnadiff.sampling._samplers import SAMPLERS, Denoiser


def encode(
    denoiser: Denoiser,
    x0: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    cond: dict | None = None,
    sampler: str = "heun",
    progress: bool = False,
) -> torch.Tensor:
    """Map clean profiles to their latent noise at ``sigmas.max()`` (DDIM-style inversion).

    Song et al. 2021 (DDIM, sec. 4.3) / Su et al. 2023 (dual diffusion implicit bridges): the ODE
    is run from ``sigmas.min()`` upward under the source condition; decoding that noise under a
    target condition gives a counterfactual that keeps what the condition does not explain.

    Parameters
    ----------
    denoiser
        ``denoiser(x, sigma, cond) -> x0_hat``.
    x0
        Clean profiles ``(n_cells, n_genes)``, taken as the state at the smallest noise level.
    sigmas
        Noise levels in either order; zeros are removed (the ODE is singular at 0).
    cond
        Conditions of the source cells.
    sampler
        A deterministic sampler: ``"euler"``, ``"heun"`` or ``"dpmpp_2m"``.
    progress
        Show a progress bar.

    Returns
    -------
    torch.Tensor
        Latents at the largest noise level, shaped like ``x0``.
    """
    up = torch.sort(sigmas[sigmas > 0]).values
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose from {sorted(SAMPLERS)}")
    return SAMPLERS[sampler](denoiser, x0, up, cond=cond, progress=progress)
