"""The EDM-preconditioned denoiser network ``D(x, sigma, cond) -> x0_hat``."""

from __future__ import annotations

import math

import pytest
import torch

from rnadiff._config import NetworkConfig
from rnadiff.diffusion import edm_scalings
from rnadiff.networks import Denoiser

N, GENES = 10, 6


pytestmark = pytest.mark.usefixtures("one_thread")


def _denoiser(sigma_data=1.0, depth=2, seed=0):
    torch.manual_seed(seed)
    return Denoiser(
        GENES,
        categorical={"pert": 3, "cell_type": 2},
        continuous=["dose"],
        config=NetworkConfig(width=16, depth=depth, emb_dim=8),
        sigma_data=sigma_data,
    )


def _inputs(seed=1):
    gen = torch.Generator().manual_seed(seed)
    pert = torch.zeros(N, 3)
    pert[torch.arange(N), torch.arange(N) % 3] = 1.0
    pert[0] = 0.0  # one dropped (null) perturbation
    cell_type = torch.zeros(N, 2)
    cell_type[torch.arange(N), torch.arange(N) % 2] = 1.0
    cell_type[2] = 0.0  # one dropped (null) cell type
    dose = torch.randn(N, generator=gen)
    dose[1] = math.nan  # one dropped dose
    cond = {"pert": pert, "cell_type": cell_type, "dose": dose}
    x = torch.randn(N, GENES, generator=gen)
    sigma = torch.logspace(-2, 1.5, N)
    return x, sigma, cond


@pytest.mark.parametrize("depth", [1, 3])
def test_output_shape_and_dtype(depth):
    x, sigma, cond = _inputs()
    out = _denoiser(depth=depth)(x, sigma, cond)
    assert out.shape == (N, GENES)
    assert out.dtype == x.dtype
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("sigma_data", [0.5, 1.0, 2.0])
def test_at_initialization_the_denoiser_is_c_skip_times_x(sigma_data):
    x, sigma, cond = _inputs()
    out = _denoiser(sigma_data=sigma_data)(x, sigma, cond)
    c_skip, _, _, _ = edm_scalings(sigma, sigma_data)
    assert torch.equal(out, c_skip[:, None] * x)


def test_denoiser_does_not_modify_its_inputs():
    x, sigma, cond = _inputs()
    before = (x.clone(), sigma.clone(), {k: v.clone() for k, v in cond.items()})
    model = _denoiser()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model(x, sigma, cond)
    assert torch.equal(x, before[0])
    assert torch.equal(sigma, before[1])
    for k, v in cond.items():
        torch.testing.assert_close(v, before[2][k], rtol=0, atol=0, equal_nan=True)


def test_each_cell_is_denoised_independently_of_the_batch():
    model = _denoiser()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.eval()
    x, sigma, cond = _inputs()
    full = model(x, sigma, cond)
    part = model(x[3:6], sigma[3:6], {k: v[3:6] for k, v in cond.items()})
    torch.testing.assert_close(part, full[3:6])


def test_gradients_reach_the_condition_encoder():
    model = _denoiser()
    x, sigma, cond = _inputs()
    target = torch.randn(N, GENES, generator=torch.Generator().manual_seed(2))

    # At initialization the zero output layer blocks the gradients to everything before it
    # (adaLN-Zero), but the graph must still connect every condition-encoder parameter.
    loss = (model(x, sigma, cond) - target).pow(2).mean()
    loss.backward()
    for name, p in model.cond_encoder.named_parameters():
        assert p.grad is not None, f"{name} is not connected to the loss"

    # After one optimizer step the output layer is non-zero and the condition encoder learns.
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.step()
    opt.zero_grad()
    before = {n: p.detach().clone() for n, p in model.cond_encoder.named_parameters()}
    for _ in range(2):
        loss = (model(x, sigma, cond) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name, p in model.cond_encoder.named_parameters():
        assert not torch.equal(p.detach(), before[name]), f"{name} was not updated"


def test_repeated_embeddings_share_their_modulations_with_the_same_result():
    from rnadiff.networks import ResidualMLP
    from rnadiff.networks import _mlp as mlp

    torch.manual_seed(0)
    net = ResidualMLP(12, width=16, depth=2, emb_dim=8, dropout=0.0)
    for p in net.parameters():  # the zero-initialized modulations would hide any mix-up
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(200, 12)
    emb = torch.randn(5, 8)[torch.arange(200) % 5]
    calls = []
    hook = net.modulation_out.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    net.train()
    every_row = net(x, emb)
    net.eval()
    with torch.no_grad():
        shared = net(x, emb)
        distinct = net(x, torch.randn(200, 8))  # no repeats: every row's own
        few = net(x[:10], emb[:10])  # too few rows to look for repeats
    hook.remove()
    assert calls == [200, 5, 200, 10]
    assert torch.allclose(shared, every_row, atol=1e-6)
    assert mlp.MIN_ROWS_TO_DEDUPLICATE > 10
    assert torch.allclose(few, every_row[:10], atol=1e-6)
    assert distinct.shape == (200, 12)


def test_distinct_rows_groups_equal_rows_exactly():
    from rnadiff.networks._mlp import distinct_rows

    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0], [1.0, 2.0 + 1e-6], [3.0, 4.0]])
    rows, inverse = distinct_rows(x)
    assert len(rows) == 3 and torch.equal(x[rows][inverse], x)
    assert inverse[0] == inverse[2] != inverse[3]
    assert distinct_rows(torch.tensor([[float("nan"), 1.0], [float("nan"), 1.0]])) is None


def _ensemble(n_models=3, seed=0):
    torch.manual_seed(seed)
    return Denoiser(
        GENES,
        categorical={"pert": 3, "cell_type": 2},
        continuous=["dose"],
        config=NetworkConfig(width=16, depth=2, emb_dim=8, n_models=n_models),
        sigma_data=1.0,
    )


def _perturbed(net):
    # the output layers start at zero (every member equal to c_skip x): move them apart
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return net


def test_an_ensemble_denoises_as_the_mean_of_its_members():
    x, sigma, cond = _inputs()
    net = _perturbed(_ensemble(3))
    each = net(x, sigma, cond, each=True)
    assert each.shape == (3, N, GENES)
    # the members differ (their own weights), and the denoiser is their mean
    assert (each[0] - each[1]).abs().max() > 1e-3
    torch.testing.assert_close(net(x, sigma, cond), each.mean(dim=0))


def test_one_network_ignores_each():
    x, sigma, cond = _inputs()
    net = _perturbed(_denoiser())
    assert net.n_models == 1
    torch.testing.assert_close(net(x, sigma, cond, each=True), net(x, sigma, cond))


def test_ensemble_members_start_from_their_own_weights():
    net = _ensemble(2)
    a, b = net.net.members
    assert not torch.equal(a.proj_in.weight, b.proj_in.weight)
    assert not torch.equal(a.blocks[0].fc1.weight, b.blocks[0].fc1.weight)


def test_n_models_must_be_positive():
    from rnadiff._errors import InputError

    with pytest.raises(InputError, match="n_models"):
        NetworkConfig(n_models=0)
