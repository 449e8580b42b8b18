"""Samplers: one contract for all of them, then correctness on Gaussian data.

For data ``N(mu, diag(s^2))`` the exact denoiser is known in closed form,
``D(x, sigma) = mu + s^2 / (s^2 + sigma^2) (x - mu)`` per gene, so a sampler that uses it must
reproduce the data's mean and variance.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

from rnadiff.diffusion import karras_sigmas
from rnadiff.sampling import SAMPLERS, sample_heun

MU = torch.tensor([-1.0, 0.5, 0.0, 2.0, -0.3, 1.0, 0.2, -2.0])
STD = torch.tensor([0.05, 0.1, 0.3, 0.5, 1.0, 1.5, 2.0, 3.0])

# Every entry of the registry, plus Heun with stochastic churn (the only sampler that draws noise).
VARIANTS = {**SAMPLERS, "heun_churn": functools.partial(sample_heun, s_churn=20.0)}
DETERMINISTIC = sorted(SAMPLERS)


def gaussian_denoiser(mu: torch.Tensor, std: torch.Tensor):
    """The exact denoiser ``E[x0 | x]`` of ``x0 ~ N(mu, diag(std^2))``, ``x = x0 + sigma n``."""

    def denoiser(x, sigma, cond=None):
        shrink = std**2 / (std**2 + sigma[:, None] ** 2)
        return mu + shrink * (x - mu)

    return denoiser


def test_registry_lists_the_documented_samplers():
    assert set(SAMPLERS) >= {"euler", "heun", "dpmpp_2m"}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_sampler_contract(name):
    sampler = VARIANTS[name]
    calls = []

    def denoiser(x, sigma, cond):
        calls.append((x.shape, sigma.shape, cond))
        return gaussian_denoiser(MU, STD)(x, sigma)

    cond = {"pert": torch.ones(6, 2)}
    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(0)) * 80
    sigmas = karras_sigmas(10)
    x_before, sigmas_before = x.clone(), sigmas.clone()

    def run(seed):
        gen = torch.Generator().manual_seed(seed)
        return sampler(denoiser, x, sigmas, cond=cond, generator=gen)

    out = run(1)

    assert out.shape == x.shape
    assert out.dtype == x.dtype
    assert torch.isfinite(out).all()
    assert torch.equal(x, x_before), "the sampler modified its input x in place"
    assert torch.equal(sigmas, sigmas_before), "the sampler modified sigmas in place"
    assert torch.equal(run(1), out), "same generator seed must give the same output"
    assert calls, "the denoiser was never called"
    for x_shape, sigma_shape, seen_cond in calls:
        assert x_shape == (6, 8)
        assert sigma_shape == (6,)
        assert seen_cond is cond


def test_churn_uses_the_generator_and_the_ode_samplers_do_not():
    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(0)) * 80
    sigmas = karras_sigmas(10)
    denoiser = gaussian_denoiser(MU, STD)

    def run(sampler, seed):
        return sampler(denoiser, x, sigmas, generator=torch.Generator().manual_seed(seed))

    assert not torch.equal(run(VARIANTS["heun_churn"], 1), run(VARIANTS["heun_churn"], 2))
    for name in DETERMINISTIC:
        assert torch.equal(run(SAMPLERS[name], 1), run(SAMPLERS[name], 2)), name


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_callback_sees_every_step(name):
    seen = []
    sigmas = karras_sigmas(7)
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(0)) * 80
    out = VARIANTS[name](
        gaussian_denoiser(MU, STD),
        x,
        sigmas,
        generator=torch.Generator().manual_seed(0),
        callback=seen.append,
    )
    assert [info["i"] for info in seen] == list(range(len(sigmas) - 1))
    assert torch.equal(seen[-1]["x"], out)


# Steps per sampler: first-order Euler needs more steps than the second-order solvers to reach
# the same accuracy on the variance (its error shrinks like 1 / steps).
STEPS = {"euler": 256, "heun": 64, "dpmpp_2m": 64, "heun_churn": 64}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_exact_gaussian_denoiser_reproduces_the_data_distribution(name):
    n, sigma_max = 4000, 80.0
    gen = torch.Generator().manual_seed(0)
    x = sigma_max * torch.randn(n, len(MU), generator=gen, dtype=torch.float64)
    sigmas = karras_sigmas(STEPS[name], sigma_max=sigma_max)

    out = VARIANTS[name](gaussian_denoiser(MU, STD), x, sigmas, generator=gen)

    # Variance ratio: the sampling error of a variance from 4000 cells is ~2%, so 10% is ~4.5
    # standard errors plus room for the discretization error.
    ratio = out.var(dim=0) / STD**2
    assert ratio.sub(1).abs().max().item() < 0.10, ratio
    # Mean: 4 standard errors, plus the known bias of starting from N(0, sigma_max^2) instead of
    # the exact marginal N(mu, s^2 + sigma_max^2): the ODE maps it to mu (1 - s / sigma_max).
    tol = 4 * STD / math.sqrt(n) + MU.abs() * STD / sigma_max
    assert ((out.mean(dim=0) - MU).abs() < tol).all(), out.mean(dim=0) - MU


def test_exact_gaussian_samples_are_not_trivially_the_mean():
    # Guard for the test above: with too few steps Euler visibly misses the variance, so the
    # 10% tolerance does discriminate.
    gen = torch.Generator().manual_seed(0)
    x = 80.0 * torch.randn(4000, len(MU), generator=gen, dtype=torch.float64)
    out = SAMPLERS["euler"](gaussian_denoiser(MU, STD), x, karras_sigmas(8))
    ratio = out.var(dim=0) / STD**2
    assert ratio.sub(1).abs().max().item() > 0.10
