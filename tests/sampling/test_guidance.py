"""Classifier-free guidance as a denoiser wrapper, checked on a real, randomly perturbed network."""

from __future__ import annotations

import pytest
import torch

from rnadiff._config import NetworkConfig
from rnadiff.conditioning import drop_covariates
from rnadiff.networks import Denoiser
from rnadiff.sampling import classifier_free_guidance

N, GENES = 12, 7
KEYS = ("pert", "cell_type", "dose")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def denoiser() -> Denoiser:
    torch.manual_seed(0)
    model = Denoiser(
        GENES,
        categorical={"pert": 3, "cell_type": 2},
        continuous=["dose"],
        config=NetworkConfig(width=32, depth=2, emb_dim=16),
        sigma_data=1.0,
    )
    # The output layer and the modulations start at zero (the network then ignores the
    # condition); perturb every parameter so that each covariate changes the output.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def inputs():
    gen = torch.Generator().manual_seed(1)
    pert = torch.zeros(N, 3)
    pert[torch.arange(N), torch.arange(N) % 3] = 1.0
    pert[::4, 2] = 1.0  # some combinations "A+C"
    cell_type = torch.zeros(N, 2)
    cell_type[torch.arange(N), torch.arange(N) % 2] = 1.0
    cond = {"pert": pert, "cell_type": cell_type, "dose": torch.randn(N, generator=gen)}
    x = torch.randn(N, GENES, generator=gen) * 2
    sigma = torch.full((N,), 1.5)
    return x, sigma, cond


def _clone(cond):
    return {k: v.clone() for k, v in cond.items()}


def test_each_covariate_changes_the_output(denoiser, inputs):
    # Guard: otherwise the equalities below would hold for any guidance formula.
    x, sigma, cond = inputs
    full = denoiser(x, sigma, cond)
    for key in KEYS:
        dropped = denoiser(x, sigma, drop_covariates(cond, [key]))
        assert (full - dropped).abs().max() > 1e-3, key


def test_scale_one_is_the_conditional_denoiser(denoiser, inputs):
    x, sigma, cond = inputs
    guided = classifier_free_guidance(denoiser, 1.0)
    assert torch.equal(guided(x, sigma, cond), denoiser(x, sigma, cond))


def test_scale_zero_is_the_unconditional_denoiser(denoiser, inputs):
    x, sigma, cond = inputs
    guided = classifier_free_guidance(denoiser, 0.0)
    uncond = denoiser(x, sigma, drop_covariates(cond, KEYS))
    torch.testing.assert_close(guided(x, sigma, cond), uncond)
    assert not torch.allclose(uncond, denoiser(x, sigma, cond))


@pytest.mark.parametrize("scale", [2.0, 0.5, 3.5])
def test_joint_scale_extrapolates_from_unconditional(denoiser, inputs, scale):
    x, sigma, cond = inputs
    cond_out = denoiser(x, sigma, cond)
    uncond = denoiser(x, sigma, drop_covariates(cond, KEYS))
    guided = classifier_free_guidance(denoiser, scale)(x, sigma, cond)
    torch.testing.assert_close(guided, uncond + scale * (cond_out - uncond))
    if scale == 2.0:
        torch.testing.assert_close(guided, 2 * cond_out - uncond)


@pytest.mark.parametrize("key", KEYS)
def test_per_covariate_zero_drops_that_covariate(denoiser, inputs, key):
    x, sigma, cond = inputs
    guided = classifier_free_guidance(denoiser, {key: 0.0})
    expected = denoiser(x, sigma, drop_covariates(cond, [key]))
    torch.testing.assert_close(guided(x, sigma, cond), expected)


@pytest.mark.parametrize("key", KEYS)
def test_per_covariate_one_is_the_conditional_denoiser(denoiser, inputs, key):
    x, sigma, cond = inputs
    guided = classifier_free_guidance(denoiser, {key: 1.0})
    torch.testing.assert_close(guided(x, sigma, cond), denoiser(x, sigma, cond))


def test_per_covariate_scales_add_their_differences(denoiser, inputs):
    x, sigma, cond = inputs
    weights = {"pert": 2.5, "cell_type": 0.0, "dose": 1.0}
    out = denoiser(x, sigma, cond)
    expected = out.clone()
    for key, w in weights.items():
        expected += (w - 1) * (out - denoiser(x, sigma, drop_covariates(cond, [key])))
    guided = classifier_free_guidance(denoiser, weights)(x, sigma, cond)
    torch.testing.assert_close(guided, expected)


@pytest.mark.parametrize("scale", [0.0, 2.0, {"pert": 3.0, "dose": 0.0}])
def test_guidance_leaves_the_condition_unmodified(denoiser, inputs, scale):
    x, sigma, cond = inputs
    before, x_before = _clone(cond), x.clone()
    classifier_free_guidance(denoiser, scale)(x, sigma, cond)
    assert torch.equal(x, x_before)
    for key in KEYS:
        assert torch.equal(cond[key], before[key]), key


def test_unknown_covariate_in_per_covariate_scale_is_an_error(denoiser, inputs):
    x, sigma, cond = inputs
    with pytest.raises(KeyError, match="unknown covariates"):
        classifier_free_guidance(denoiser, {"batch": 2.0})(x, sigma, cond)


@pytest.mark.parametrize("scale", [0.0, 2.0])
def test_joint_scale_without_condition_is_the_plain_denoiser(scale):
    # The denoiser contract allows cond=None (an unconditional model); guidance has nothing to
    # guide then and should return the denoiser's output.
    def denoiser(x, sigma, cond):
        return 0.5 * x

    x = torch.randn(4, 3)
    guided = classifier_free_guidance(denoiser, scale)
    torch.testing.assert_close(guided(x, torch.ones(4), None), 0.5 * x)


def _additive_denoiser():
    """D(x, sigma, c) = x/2 + pert @ A + ct @ B: exactly additive in its covariates."""
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    b = torch.tensor([[0.5, -1.0], [-2.0, 0.25]])

    def denoiser(x, sigma, cond):
        return x / 2 + cond["pert"] @ a + cond["cell_type"] @ b

    return denoiser


def test_compositional_guidance_is_exact_for_an_additive_denoiser():
    from rnadiff.sampling import compositional_guidance

    d = _additive_denoiser()
    cond = {"pert": torch.eye(3)[[1, 2]], "cell_type": torch.eye(2)[[0, 1]]}
    x, sigma = torch.randn(2, 2), torch.ones(2)
    ref = torch.eye(3)[[0]]  # the control
    composed = compositional_guidance(d, key="pert", reference=ref, scale=1.0)
    torch.testing.assert_close(composed(x, sigma, cond), d(x, sigma, cond))
    reference_only = compositional_guidance(d, key="pert", reference=ref, scale=0.0)
    torch.testing.assert_close(
        reference_only(x, sigma, cond), d(x, sigma, {**cond, "pert": ref.expand(2, 3)})
    )
    doubled = compositional_guidance(d, key="pert", reference=ref, scale=2.0)
    effect = d(x, sigma, cond) - d(x, sigma, {**cond, "pert": ref.expand(2, 3)})
    torch.testing.assert_close(doubled(x, sigma, cond), d(x, sigma, cond) + effect)


def test_compositional_guidance_only_where_asked():
    from rnadiff.sampling import compositional_guidance

    d = _additive_denoiser()

    def nonadditive(x, sigma, cond):  # an interaction term, so composition != joint
        return d(x, sigma, cond) + (cond["pert"][:, 1:2] * cond["cell_type"][:, 1:2])

    cond = {"pert": torch.eye(3)[[1, 1]], "cell_type": torch.eye(2)[[1, 1]]}
    x, sigma = torch.randn(2, 2), torch.ones(2)
    where = torch.tensor([True, False])
    out = compositional_guidance(nonadditive, key="pert", reference=torch.eye(3)[[0]], where=where)(
        x, sigma, cond
    )
    joint = nonadditive(x, sigma, cond)
    torch.testing.assert_close(out[1], joint[1])
    assert not torch.allclose(out[0], joint[0])


def test_per_cell_guidance_weights():
    d = _additive_denoiser()
    cond = {"pert": torch.eye(3)[[1, 2]], "cell_type": torch.eye(2)[[0, 1]]}
    x, sigma = torch.randn(2, 2), torch.ones(2)
    per_cell = classifier_free_guidance(d, {"pert": torch.tensor([1.0, 3.0])})(x, sigma, cond)
    uniform = classifier_free_guidance(d, {"pert": 3.0})(x, sigma, cond)
    torch.testing.assert_close(per_cell[0], d(x, sigma, cond)[0])  # weight 1: conditional
    torch.testing.assert_close(per_cell[1], uniform[1])


# --- gradient guidance and the Langevin corrector -----------------------------------------


def _target_objective(target):
    def objective(x0):
        return -0.5 * (x0 - target).pow(2).sum(dim=1)

    return objective


def test_gradient_guidance_with_unit_scale_projects_the_estimate_onto_the_target():
    from rnadiff.sampling import gradient_guidance

    target = torch.full((1, 3), 2.0)
    base = lambda x, sigma, cond: 0.5 * x  # noqa: E731
    guided = gradient_guidance(base, _target_objective(target), scale=1.0)
    x = torch.randn(4, 3)
    before = x.clone()
    with torch.no_grad():  # samplers run without autograd; guidance still differentiates
        out = guided(x, torch.full((4,), 1.0), None)
    assert torch.allclose(out, target.expand(4, 3))
    assert torch.equal(x, before)
    half = gradient_guidance(base, _target_objective(target), scale=0.5)(x, torch.ones(4), None)
    assert torch.allclose(half, 0.5 * (0.5 * x) + 0.5 * target)
    # a per-gene preconditioner scales each gene's step
    pre = gradient_guidance(base, _target_objective(target), precondition=torch.tensor([1, 0, 0]))
    out = pre(x, torch.ones(4), None)
    assert torch.allclose(out[:, 0], target[0, 0].expand(4))
    assert torch.allclose(out[:, 1:], 0.5 * x[:, 1:])


def test_gradient_guidance_acts_only_inside_its_noise_range_and_through_the_network():
    from rnadiff.sampling import gradient_guidance

    target = torch.zeros(1, 2)
    base = lambda x, sigma, cond: 0.5 * x  # noqa: E731
    x = torch.ones(3, 2)
    off = gradient_guidance(base, _target_objective(target), sigma_min=1.0)
    assert torch.equal(off(x, torch.full((3,), 0.5), None), 0.5 * x)
    # through the network the gradient picks up the Jacobian (0.5): d/dx of -0.5*|0.5x|^2
    deep = gradient_guidance(base, _target_objective(target), through_denoiser=True)
    assert torch.allclose(deep(x, torch.ones(3), None), 0.5 * x - 0.25 * x)


def test_langevin_corrector_keeps_a_gaussian_at_its_noise_level():
    from rnadiff.sampling import langevin_corrector

    mu, std, sigma = 3.0, 0.5, 0.7

    def denoiser(x, s, cond=None):
        return mu + std**2 / (std**2 + s[:, None] ** 2) * (x - mu)

    g = torch.Generator().manual_seed(0)
    x = torch.zeros(4000, 4)  # far from the target N(mu, std^2 + sigma^2)
    x = langevin_corrector(denoiser, x, sigma, generator=g, n_steps=300, snr=0.3)
    assert float(x.mean()) == pytest.approx(mu, abs=0.05)
    assert float(x.std()) == pytest.approx((std**2 + sigma**2) ** 0.5, rel=0.08)


def test_predictor_corrector_sampler_reproduces_the_data_distribution():
    from rnadiff.diffusion import karras_sigmas
    from rnadiff.sampling import sample_langevin

    mu, std = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0])

    def denoiser(x, s, cond=None):
        return mu + std**2 / (std**2 + s[:, None] ** 2) * (x - mu)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 2, generator=g) * 80
    out = sample_langevin(denoiser, x, karras_sigmas(20), generator=g, n_corrector=2)
    assert torch.allclose(out.mean(0), mu, atol=0.1)
    # unadjusted Langevin steps carry an O(step) bias: measured 0.58 / 2.16 for 0.5 / 2.0
    assert torch.allclose(out.std(0), std, rtol=0.2)
    assert not torch.allclose(out, sample_langevin(denoiser, x, karras_sigmas(20), n_corrector=0))


def test_compositional_guidance_takes_the_effect_from_the_weighted_contexts():
    from rnadiff.sampling import compositional_guidance

    d = _additive_denoiser()

    def interacting(x, sigma, cond):  # the perturbation's effect depends on the cell type
        return d(x, sigma, cond) + 5.0 * cond["pert"][:, 1:2] * cond["cell_type"][:, 1:2]

    cell_types = torch.eye(2)
    cond = {"pert": torch.eye(3)[[1, 1, 1]], "cell_type": torch.eye(2)[[0, 0, 0]]}
    x, sigma = torch.randn(3, 2), torch.ones(3)
    ref = torch.eye(3)[[0]]
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # last cell: marginal
    out = compositional_guidance(
        interacting,
        key="pert",
        reference=ref,
        scale=2.0,
        contexts={"cell_type": cell_types},
        context_weights=weights,
    )(x, sigma, cond)
    base = interacting(x, sigma, {**cond, "pert": ref.expand(3, 3)})
    effect_in = [
        interacting(x, sigma, {**cond, "cell_type": cell_types[[j] * 3]})
        - interacting(x, sigma, {"pert": ref.expand(3, 3), "cell_type": cell_types[[j] * 3]})
        for j in (0, 1)
    ]
    torch.testing.assert_close(out[0], (base + 2.0 * effect_in[0])[0])
    torch.testing.assert_close(out[1], (base + 2.0 * effect_in[1])[1])  # includes the 5.0 term
    assert not torch.allclose(out[0], out[1])
    marginal = compositional_guidance(interacting, key="pert", reference=ref, scale=2.0)
    torch.testing.assert_close(out[2], marginal(x, sigma, cond)[2])
    with pytest.raises(ValueError, match="both"):
        compositional_guidance(d, key="pert", reference=ref, contexts={"cell_type": cell_types})


def test_effect_scaling_multiplies_each_cells_effect_from_the_reference():
    from rnadiff.sampling import effect_scaling

    d = _additive_denoiser()
    cond = {"pert": torch.eye(3)[[1, 2, 2]], "cell_type": torch.eye(2)[[0, 1, 1]]}
    x, sigma = torch.randn(3, 2), torch.ones(3)
    ref = torch.eye(3)[[0]]
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])  # the denoiser's perturbation term
    effect = (torch.eye(3)[[1, 2, 2]] - ref) @ a
    scaled = effect_scaling(d, key="pert", reference=ref, scale=torch.tensor([1.0, 2.0, 0.5]))
    out = scaled(x, sigma, cond)
    plain = d(x, sigma, cond)
    torch.testing.assert_close(out[0], plain[0])  # factor 1: the conditional denoiser
    torch.testing.assert_close(out[1], plain[1] + effect[1])  # twice the effect
    torch.testing.assert_close(out[2], plain[2] - 0.5 * effect[2])  # half of it
    assert torch.equal(cond["pert"], torch.eye(3)[[1, 2, 2]])  # the condition is unmodified


def test_effect_scaling_of_ones_makes_no_second_call():
    from rnadiff.sampling import effect_scaling

    d = _additive_denoiser()
    calls = []

    def counted(x, sigma, cond):
        calls.append(len(x))
        return d(x, sigma, cond)

    cond = {"pert": torch.eye(3)[[1, 2]], "cell_type": torch.eye(2)[[0, 1]]}
    x, sigma = torch.randn(2, 2), torch.ones(2)
    out = effect_scaling(counted, key="pert", reference=torch.eye(3)[[0]], scale=torch.ones(2))(
        x, sigma, cond
    )
    torch.testing.assert_close(out, d(x, sigma, cond))
    assert calls == [2]


def test_combination_composition_adds_the_parts_effects():
    from rnadiff.sampling import combination_composition

    def pairwise(x, sigma, cond):  # the joint conditional has an interaction of tokens 1 and 2
        p = cond["pert"]
        return (
            x / 2 + p @ torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]) + p[:, 1:2] * p[:, 2:3]
        )

    ref = torch.eye(3)[[0]]  # the control
    pair, single = torch.tensor([[0.0, 1.0, 1.0]]), torch.eye(3)[[2]]
    cond = {"pert": torch.cat([pair, single, pair])}
    x, sigma = torch.randn(3, 2), torch.ones(3)
    out = combination_composition(pairwise, key="pert", reference=ref)(x, sigma, cond)

    def at(row):
        return pairwise(x[:1], sigma[:1], {"pert": row})

    expected = at(ref) + (at(torch.eye(3)[[1]]) - at(ref)) + (at(torch.eye(3)[[2]]) - at(ref))
    torch.testing.assert_close(out[:1], expected)  # the parts' effects, no interaction
    assert not torch.allclose(out[:1], pairwise(x[:1], sigma[:1], {"pert": pair}))
    torch.testing.assert_close(out[1], pairwise(x, sigma, cond)[1])  # a single: D(c)
    where = torch.tensor([True, False, False])
    some = combination_composition(pairwise, key="pert", reference=ref, where=where)(x, sigma, cond)
    torch.testing.assert_close(some[2], pairwise(x, sigma, cond)[2])  # not asked: joint
    torch.testing.assert_close(some[0], out[0])


def test_interaction_transfer_keeps_the_parts_here_and_takes_the_interaction_there():
    from rnadiff.sampling import compositional_guidance, interaction_transfer

    # parts' effects differ by cell type; the pair's interaction (tokens 1 and 2) is 4.0 in
    # every type: parts here + interaction there is the joint conditional itself, which
    # carrying the whole effect over from the other type is not
    a = torch.tensor([[0.0, 0.0], [0.0, 2.0], [3.0, 3.0]])  # token 0: the control

    def denoiser(x, sigma, cond):
        p, t = cond["pert"], cond["cell_type"]
        by_type = 1.0 + 2.0 * t[:, 1:2]  # type 1 responds three times as strongly
        return x / 2 + by_type * (p @ a) + 4.0 * p[:, 1:2] * p[:, 2:3] + t @ a[1:]

    ref = torch.eye(3)[[0]]
    pair = torch.tensor([[0.0, 1.0, 1.0]])
    cond = {"pert": pair.expand(3, 3), "cell_type": torch.eye(2)[[0, 0, 1]]}
    x, sigma = torch.randn(3, 2), torch.ones(3)
    contexts = {"cell_type": torch.eye(2)}
    weights = torch.tensor([[0.0, 1.0], [0.0, 0.0], [1.0, 0.0]])  # cell 1: no source
    out = interaction_transfer(
        denoiser, key="pert", reference=ref, contexts=contexts, context_weights=weights
    )(x, sigma, cond)
    joint = denoiser(x, sigma, cond)
    torch.testing.assert_close(out[0], joint[0])  # type 0 from type 1's interaction
    torch.testing.assert_close(out[2], joint[2])  # and the other way round
    # no source: the parts alone, without the interaction
    torch.testing.assert_close(out[1], joint[1] - 4.0)
    whole = compositional_guidance(
        denoiser, key="pert", reference=ref, contexts=contexts, context_weights=weights
    )(x, sigma, cond)
    assert not torch.allclose(whole[0], joint[0])
    where = torch.tensor([True, False, False])
    some = interaction_transfer(
        denoiser, key="pert", reference=ref, contexts=contexts, context_weights=weights,
        where=where,
    )(x, sigma, {**cond, "pert": torch.cat([pair, torch.eye(3)[[1, 2]]])})  # fmt: skip
    torch.testing.assert_close(some[0], joint[0])
    singles = denoiser(x, sigma, {**cond, "pert": torch.cat([pair, torch.eye(3)[[1, 2]]])})
    torch.testing.assert_close(some[1:], singles[1:])  # not asked: the joint conditional
