"""EDM preconditioning (Karras et al. 2022, Table 1): closed forms and unit-variance properties."""

from __future__ import annotations

import math

import pytest
import torch

from rnadiff.diffusion import edm_scalings

SIGMAS = [0.002, 0.05, 0.5, 1.0, 3.0, 80.0]


@pytest.mark.parametrize("sigma_data", [0.5, 1.0, 2.0])
def test_scalings_closed_form(sigma_data):
    sigma = torch.tensor(SIGMAS, dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm_scalings(sigma, sigma_data)
    total = sigma**2 + sigma_data**2

    torch.testing.assert_close(c_skip, sigma_data**2 / total)
    torch.testing.assert_close(c_out, sigma * sigma_data / total.sqrt())
    torch.testing.assert_close(c_in, 1 / total.sqrt())
    torch.testing.assert_close(c_noise, sigma.log() / 4)
    # Identity of the EDM scalings: c_skip^2 * sigma^2 + (1 - c_skip)^2 * sigma_data^2 = c_out^2.
    torch.testing.assert_close(c_skip**2 * sigma**2 + (1 - c_skip) ** 2 * sigma_data**2, c_out**2)


@pytest.mark.parametrize("sigma_data", [0.5, 1.0, 2.0])
def test_scalings_limits(sigma_data):
    tiny = torch.tensor([1e-8], dtype=torch.float64)
    huge = torch.tensor([1e8], dtype=torch.float64)
    c_skip0, c_out0, c_in0, _ = edm_scalings(tiny, sigma_data)
    c_skip_inf, c_out_inf, _, _ = edm_scalings(huge, sigma_data)

    # Without noise the denoiser passes its input through; at huge noise it ignores it and the
    # network's output is scaled to the data's std.
    assert c_skip0.item() == pytest.approx(1.0, abs=1e-12)
    assert c_out0.item() == pytest.approx(0.0, abs=1e-7)
    assert c_in0.item() == pytest.approx(1 / sigma_data)
    assert c_skip_inf.item() == pytest.approx(0.0, abs=1e-12)
    assert c_out_inf.item() == pytest.approx(sigma_data, rel=1e-9)


def test_scalings_are_monotone_in_sigma():
    sigma = torch.logspace(-3, 2, 50, dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm_scalings(sigma, 1.0)
    assert (c_skip.diff() < 0).all()
    assert (c_out.diff() > 0).all()
    assert (c_in.diff() < 0).all()
    assert (c_noise.diff() > 0).all()


@pytest.mark.parametrize("sigma_data", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("sigma", SIGMAS)
def test_network_input_and_target_have_unit_variance(sigma, sigma_data):
    n = 100_000
    gen = torch.Generator().manual_seed(0)
    x0 = sigma_data * torch.randn(n, generator=gen, dtype=torch.float64)
    noise = torch.randn(n, generator=gen, dtype=torch.float64)
    c_skip, c_out, c_in, _ = edm_scalings(torch.tensor(sigma, dtype=torch.float64), sigma_data)
    x = x0 + sigma * noise

    net_input = c_in * x
    target = (x0 - c_skip * x) / c_out

    # The variance of a sample variance of n standard normals is 2 / n; 5 standard errors.
    tol = 5 * math.sqrt(2 / n)
    assert net_input.var().item() == pytest.approx(1.0, abs=tol)
    assert target.var().item() == pytest.approx(1.0, abs=tol)
