"""Noise levels for sampling and for training (Karras et al. 2022, "EDM")."""

from __future__ import annotations

import torch


def karras_sigmas(
    n_steps: int,
    *,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    append_zero: bool = True,
) -> torch.Tensor:
    """Decreasing noise levels of the EDM sampler (Karras et al. 2022, eq. 5).

    Parameters
    ----------
    n_steps
        Number of noise levels from ``sigma_max`` down to ``sigma_min`` (at least 1).
    sigma_min, sigma_max
        Smallest and largest noise level.
    rho
        Curvature of the schedule; 7 spends more steps at low noise, where detail is decided.
    append_zero
        Append a final 0 so that the last step lands on clean data.

    Returns
    -------
    torch.Tensor
        1-D float64 tensor of length ``n_steps`` (+1 with ``append_zero``).
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be at least 1, got {n_steps}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    ramp = torch.linspace(0, 1, n_steps, dtype=torch.float64)
    if n_steps == 1:
        ramp = torch.zeros(1, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    if append_zero:
        sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    return sigmas


def sample_training_sigmas(
    n: int,
    *,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Training noise levels, ``ln(sigma) ~ N(p_mean, p_std^2)`` (Karras et al. 2022, Table 1)."""
    return (torch.randn(n, generator=generator) * p_std + p_mean).exp()
