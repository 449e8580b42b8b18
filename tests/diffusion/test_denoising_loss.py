"""The EDM loss weight and the per-cell denoising loss."""

from __future__ import annotations

import pytest
import torch

from rnadiff.diffusion import denoising_loss, edm_loss_weight, edm_scalings


@pytest.mark.parametrize("sigma_data", [0.5, 1.0, 2.0])
def test_loss_weight_is_inverse_squared_c_out(sigma_data):
    sigma = torch.logspace(-3, 2, 20, dtype=torch.float64)
    _, c_out, _, _ = edm_scalings(sigma, sigma_data)
    torch.testing.assert_close(edm_loss_weight(sigma, sigma_data), 1 / c_out**2)


def _batch(n=16, g=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, g, generator=gen, dtype=torch.float64)
    sigma = torch.rand(n, generator=gen, dtype=torch.float64) * 3 + 0.01
    noise = torch.randn(n, g, generator=gen, dtype=torch.float64)
    return x0, sigma, noise


def test_loss_is_zero_for_the_exact_oracle():
    x0, sigma, noise = _batch()
    loss = denoising_loss(lambda x, s, c: x0.clone(), x0, sigma, noise)
    assert loss.shape == (16,)
    assert torch.equal(loss, torch.zeros_like(loss))


@pytest.mark.parametrize("sigma_data", [0.5, 1.0])
def test_loss_matches_hand_computation(sigma_data):
    x0, sigma, noise = _batch()
    seen = {}

    def denoiser(x, s, cond):
        seen.update(x=x, sigma=s, cond=cond)
        return 0.5 * x  # shrink the noisy input: a denoiser with a known error

    cond = {"pert": torch.ones(16, 2)}
    loss = denoising_loss(denoiser, x0, sigma, noise, cond=cond, sigma_data=sigma_data)

    x_noisy = x0 + sigma[:, None] * noise
    weight = (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
    expected = weight * ((0.5 * x_noisy - x0) ** 2).mean(dim=1)
    torch.testing.assert_close(loss, expected)
    # The denoiser sees the noisy input, the per-cell noise levels and the condition unchanged.
    torch.testing.assert_close(seen["x"], x_noisy)
    assert torch.equal(seen["sigma"], sigma)
    assert seen["cond"] is cond


def test_loss_of_the_skip_only_denoiser_on_standard_data_is_one_on_average():
    # D = c_skip * x is the exact denoiser of N(0, sigma_data^2) data; its weighted error has
    # expectation 1 at every noise level (the target of the raw network has unit variance).
    n, g, sigma_data = 20_000, 4, 1.0
    gen = torch.Generator().manual_seed(1)
    x0 = sigma_data * torch.randn(n, g, generator=gen, dtype=torch.float64)
    noise = torch.randn(n, g, generator=gen, dtype=torch.float64)
    for level in (0.01, 0.3, 1.0, 10.0):
        sigma = torch.full((n,), level, dtype=torch.float64)

        def denoiser(x, s, cond):
            c_skip, _, _, _ = edm_scalings(s, sigma_data)
            return c_skip[:, None] * x

        # The error (c_skip - 1) x0 + c_skip sigma n has variance c_out^2 = 1 / lambda; 5% band.
        loss = denoising_loss(denoiser, x0, sigma, noise, sigma_data=sigma_data).mean().item()
        assert loss == pytest.approx(1.0, rel=0.05)


def test_an_ensembles_loss_is_the_mean_of_its_members_losses():
    gen = torch.Generator().manual_seed(3)
    x0 = torch.randn(5, 4, generator=gen)
    noise = torch.randn(5, 4, generator=gen)
    sigma = torch.tensor([0.1, 0.5, 1.0, 2.0, 5.0])
    shifts = torch.tensor([0.0, 0.3, -0.7])

    def each(x, s, cond=None):  # three members, each off by its own shift
        return torch.stack([x * 0.5 + d for d in shifts])

    def member(k):
        return lambda x, s, cond=None: x * 0.5 + shifts[k]

    got = denoising_loss(each, x0, sigma, noise, sigma_data=0.8)
    singles = [denoising_loss(member(k), x0, sigma, noise, sigma_data=0.8) for k in range(3)]
    assert got.shape == (5,)
    torch.testing.assert_close(got, torch.stack(singles).mean(dim=0))
