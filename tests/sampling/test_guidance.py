"""Classifier-free guidance as a denoiser wrapper, checked on a real, randomly perturbed network."""

from __future__ import annotations

import pytest
import torch

from rnadiff.conditioning import drop_covariates
from rnadiff.config import NetworkConfig
from rnadiff.models import Denoiser
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
