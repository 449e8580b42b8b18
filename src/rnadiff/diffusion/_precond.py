"""EDM preconditioning (Karras et al. 2022, Table 1 and Appendix B.6)."""

from __future__ import annotations

import torch


def edm_scalings(
    sigma: torch.Tensor, sigma_data: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(c_skip, c_out, c_in, c_noise)`` for noise levels ``sigma`` (eq. 7 and Table 1).

    The network ``F`` then defines the denoiser
    ``D(x, sigma) = c_skip * x + c_out * F(c_in * x, c_noise)``: its input and its training
    target both have unit variance at every noise level when the data have std ``sigma_data``.
    """
    s2, d2 = sigma**2, sigma_data**2
    c_skip = d2 / (s2 + d2)
    c_out = sigma * sigma_data / (s2 + d2).sqrt()
    c_in = 1 / (s2 + d2).sqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise
