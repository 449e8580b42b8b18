"""Encoding data into noise (probability-flow ODE run upward) and decoding it back."""

from __future__ import annotations

import pytest
import torch

from rnadiff.diffusion import karras_sigmas
from rnadiff.sampling import SAMPLERS, encode

MU = torch.tensor([-1.0, 0.5, 0.0, 2.0, -0.3, 1.0, 0.2, -2.0], dtype=torch.float64)
STD = torch.tensor([0.05, 0.1, 0.3, 0.5, 1.0, 1.5, 2.0, 3.0], dtype=torch.float64)
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


def gaussian_denoiser(x, sigma, cond=None):
    """Exact denoiser of ``N(MU, diag(STD^2))`` data."""
    return MU + STD**2 / (STD**2 + sigma[:, None] ** 2) * (x - MU)


def _data(n=500, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return MU + STD * torch.randn(n, len(MU), generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("sampler", ["heun", "dpmpp_2m"])
def test_encode_matches_the_closed_form_ode_flow(sampler):
    # For Gaussian data the probability-flow ODE keeps (x - mu) / sqrt(s^2 + sigma^2) constant.
    x0 = _data()
    sigmas = karras_sigmas(64, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)
    x0_before = x0.clone()

    z = encode(gaussian_denoiser, x0, sigmas, sampler=sampler)

    assert torch.equal(x0, x0_before)
    gain = ((STD**2 + SIGMA_MAX**2) / (STD**2 + SIGMA_MIN**2)).sqrt()
    torch.testing.assert_close(z - MU, (x0 - MU) * gain, rtol=0.01, atol=0.0)
    # The latents look like noise of level sigma_max: per-gene std close to sigma_max.
    assert (z.std(dim=0) / SIGMA_MAX).sub(1).abs().max() < 0.15


def test_encode_accepts_sigmas_in_either_order():
    x0 = _data(n=50)
    sigmas = karras_sigmas(16)
    z_down = encode(gaussian_denoiser, x0, sigmas)
    z_up = encode(gaussian_denoiser, x0, sigmas.flip(0))
    assert torch.equal(z_down, z_up)


def test_encode_rejects_unknown_sampler():
    with pytest.raises(ValueError, match="unknown sampler"):
        encode(gaussian_denoiser, _data(n=4), karras_sigmas(4), sampler="nope")


def _round_trip_error(sampler, sigmas):
    x0 = _data()
    z = encode(gaussian_denoiser, x0, sigmas, sampler=sampler)
    back = SAMPLERS[sampler](gaussian_denoiser, z, sigmas)
    return ((back - x0).abs() / STD).max().item()  # in units of each gene's std


@pytest.mark.parametrize("sampler", ["heun", "dpmpp_2m"])
def test_encode_then_decode_is_an_inverse_that_converges(sampler):
    # Decoding down to sigma_min (no trailing zero) is the exact inverse of encoding, up to the
    # discretization error of a second-order solver: 4x the steps cut the error >= 10x.
    def error(steps):
        sigmas = karras_sigmas(steps, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, append_zero=False)
        return _round_trip_error(sampler, sigmas)

    coarse, fine = error(32), error(128)
    assert coarse < 0.05
    assert fine < 1e-3
    assert fine < coarse / 10


@pytest.mark.parametrize("sampler", ["heun", "dpmpp_2m"])
def test_encode_then_decode_to_clean_data_recovers_the_data(sampler):
    # The usual schedule ends at 0; the last step from sigma_min to 0 moves a cell by only about
    # (sigma_min / s)^2 of its deviation, so the round trip stays within 1% of each gene's std.
    sigmas = karras_sigmas(64, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)
    assert _round_trip_error(sampler, sigmas) < 0.01
