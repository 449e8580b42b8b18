"""Noise levels: the Karras sampling schedule and the log-normal training distribution."""

from __future__ import annotations

import math

import pytest
import torch

from rnadiff.diffusion import karras_sigmas, sample_training_sigmas


@pytest.mark.parametrize("n_steps", [1, 2, 5, 32, 200])
@pytest.mark.parametrize(("sigma_min", "sigma_max", "rho"), [(0.002, 80.0, 7.0), (0.1, 5.0, 1.0)])
def test_karras_sigmas_endpoints_and_order(n_steps, sigma_min, sigma_max, rho):
    sigmas = karras_sigmas(n_steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)

    assert sigmas.shape == (n_steps + 1,)
    assert sigmas.dtype == torch.float64
    assert sigmas[-1] == 0
    assert sigmas[0].item() == pytest.approx(sigma_max, rel=1e-12)
    if n_steps > 1:
        assert sigmas[-2].item() == pytest.approx(sigma_min, rel=1e-12)
    assert (sigmas[:-1] > 0).all()
    assert (sigmas.diff() < 0).all(), "noise levels must strictly decrease"


def test_karras_sigmas_without_zero_and_closed_form():
    # rho = 1 is a linear ramp from sigma_max to sigma_min (eq. 5 with rho = 1).
    sigmas = karras_sigmas(5, sigma_min=1.0, sigma_max=5.0, rho=1.0, append_zero=False)
    torch.testing.assert_close(sigmas, torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], dtype=torch.float64))


def test_karras_sigmas_rho_spaces_steps_at_low_noise():
    # Larger rho spends more of the steps at low noise: the midpoint level drops.
    mid = [karras_sigmas(11, rho=rho, append_zero=False)[5].item() for rho in (1.0, 3.0, 7.0)]
    assert mid[0] > mid[1] > mid[2]
    # rho-th roots of the levels are evenly spaced.
    roots = karras_sigmas(11, rho=7.0, append_zero=False) ** (1 / 7)
    torch.testing.assert_close(roots.diff(), roots.diff()[:1].expand(10))


@pytest.mark.parametrize(
    ("n_steps", "kwargs"),
    [
        (0, {}),
        (-3, {}),
        (10, {"sigma_min": 0.0}),
        (10, {"sigma_min": -1.0}),
        (10, {"sigma_min": 80.0, "sigma_max": 80.0}),
        (10, {"sigma_min": 10.0, "sigma_max": 1.0}),
    ],
)
def test_karras_sigmas_rejects_bad_arguments(n_steps, kwargs):
    with pytest.raises(ValueError):
        karras_sigmas(n_steps, **kwargs)


@pytest.mark.parametrize(("p_mean", "p_std"), [(-1.2, 1.2), (0.5, 0.3)])
def test_training_sigmas_are_log_normal(p_mean, p_std):
    n = 200_000
    sigma = sample_training_sigmas(
        n, p_mean=p_mean, p_std=p_std, generator=torch.Generator().manual_seed(0)
    ).double()
    log_sigma = sigma.log()

    assert sigma.shape == (n,)
    assert (sigma > 0).all()
    # Tolerances are 5 standard errors of each estimate.
    assert log_sigma.mean().item() == pytest.approx(p_mean, abs=5 * p_std / math.sqrt(n))
    assert log_sigma.std().item() == pytest.approx(p_std, abs=5 * p_std / math.sqrt(2 * n))
    # Closed-form moments of the log-normal: E[sigma] = exp(mu + s^2 / 2), median exp(mu).
    assert sigma.mean().item() == pytest.approx(math.exp(p_mean + p_std**2 / 2), rel=0.02)
    assert sigma.median().item() == pytest.approx(math.exp(p_mean), rel=0.02)


def test_training_sigmas_are_reproducible_with_a_generator():
    def draw(seed):
        return sample_training_sigmas(64, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))
