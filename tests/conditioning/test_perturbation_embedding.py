"""The perturbation encoder: features of tokens (drug structures, gene embeddings), the Hill
dose-response, and views that know tokens never seen in training."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rnadiff.conditioning import (
    ConditionEncoder,
    DoseScale,
    PerturbationEmbedding,
    PerturbationSpec,
)

DOSE = DoseScale(mean=0.5, std=1.0, log_center=0.0, log_scale=1.0)


def encoded(dose: float) -> torch.Tensor:
    """A dose as the registry encodes it: standardized log1p."""
    return torch.tensor((math.log1p(dose) - DOSE.mean) / DOSE.std)


def embedding(n_tokens: int = 4, width: int = 6, **spec) -> PerturbationEmbedding:
    torch.manual_seed(0)
    spec = PerturbationSpec("p", **({"feature_dims": {"molecule": width}} | spec))
    return PerturbationEmbedding(n_tokens, 8, spec)


def one_hot(index: int, n: int = 4) -> torch.Tensor:
    row = torch.zeros(1, n)
    row[0, index] = 1.0
    return row


def test_tokens_with_equal_features_have_equal_embeddings():
    emb = embedding()
    features = torch.rand(4, 6)
    features[2] = features[1]
    emb.set_features("molecule", features, torch.tensor([False, True, True, False]))
    e1, e2, e3 = (emb(one_hot(i)) for i in (1, 2, 3))
    assert torch.allclose(e1, e2)  # structure alone decides
    assert not torch.allclose(e1, e3)  # a learned token has its own vector


def test_extended_view_embeds_new_tokens_from_features_and_leaves_the_original():
    emb = embedding()
    features = torch.rand(4, 6)
    emb.set_features("molecule", features, torch.tensor([False, True, True, True]))
    view = emb.extended(
        {"molecule": features[1:2].clone()},
        {"molecule": torch.tensor([True])},
        torch.tensor([False]),
    )
    new = torch.zeros(1, 5)
    new[0, 4] = 1.0
    known = torch.cat([one_hot(1), torch.zeros(1, 1)], dim=1)
    assert torch.allclose(view(new), view(known))  # same structure, same embedding
    assert torch.allclose(view(known), emb(one_hot(1)))
    assert emb.extra == {}  # the original knows 4 tokens still
    with pytest.raises(RuntimeError):
        emb(new)


def test_projection_learns_through_featured_tokens():
    emb = embedding()
    emb.set_features("molecule", torch.rand(4, 6), torch.tensor([False, True, False, False]))
    emb(one_hot(1)).sum().backward()
    assert emb.project["molecule"][0].weight.grad.abs().sum() > 0
    assert emb.weight.grad[1].abs().sum() == 0  # a featured token's own row is unused


@pytest.fixture
def dosed() -> PerturbationEmbedding:
    emb = embedding(dose=DOSE, control=0, feature_dims={})
    emb.dosed.copy_(torch.tensor([False, True, True, False]))
    return emb


def test_dose_zero_is_the_control_and_unknown_dose_the_full_effect(dosed):
    control = dosed(one_hot(0), encoded(0.0)[None])
    at_zero = dosed(one_hot(1), encoded(0.0)[None])
    assert torch.allclose(at_zero, control)
    full = dosed.weight[0] + dosed.weight[1]
    unknown = dosed(one_hot(1), torch.tensor([float("nan")]))
    assert torch.allclose(unknown[0], full)


def test_a_learned_level_for_an_unknown_dose():
    """unknown_learned: a dosed token with an unknown dose takes sigma(u) of its effect (0.5
    at init), u learned per token, or from a featured token's vector."""
    emb = embedding(dose=DOSE, control=0, unknown_learned=True)
    emb.dosed.copy_(torch.tensor([False, True, True, False]))
    nan = torch.tensor([float("nan")])
    half = emb.weight[0] + 0.5 * emb.weight[1]
    assert torch.allclose(emb(one_hot(1), nan)[0], half)
    with torch.no_grad():
        emb.unknown[1] = 2.0
    level = torch.sigmoid(torch.tensor(2.0))
    assert torch.allclose(emb(one_hot(1), nan)[0], emb.weight[0] + level * emb.weight[1])
    # a known dose ignores the level; dose 0 is still the control
    at_zero = emb(one_hot(1), encoded(0.0)[None])
    assert torch.allclose(at_zero, emb(one_hot(0), encoded(0.0)[None]))
    emb(one_hot(1), nan).sum().backward()
    assert emb.unknown.grad[1] != 0 and emb.unknown.grad[2] == 0
    # a featured token's level comes from its vector
    featured = embedding(dose=DOSE, control=0, unknown_learned=True)
    featured.dosed.copy_(torch.tensor([False, True, True, False]))
    featured.set_features("molecule", torch.rand(4, 6), torch.tensor([False, True, False, False]))
    featured(one_hot(1), nan).sum().backward()
    assert featured.unknown_head.weight.grad.abs().sum() > 0
    assert featured.unknown.grad is None or featured.unknown.grad[1] == 0


def test_the_unknown_dose_setting_is_stored_and_old_checkpoints_keep_the_full_effect():
    import dataclasses

    from rnadiff import ModelConfig
    from rnadiff._config import ConditioningConfig
    from rnadiff._errors import InputError

    learned = ModelConfig(conditioning=ConditioningConfig(dose_unknown="learned"))
    assert ModelConfig.from_dict(learned.to_dict()) == learned  # stored in every checkpoint
    cfg = ModelConfig().to_dict()
    assert cfg["conditioning"]["dose_unknown"] == "full"  # the default
    del cfg["conditioning"]["dose_unknown"]  # a checkpoint written before the field
    assert ModelConfig.from_dict(cfg).conditioning.dose_unknown == "full"
    with pytest.raises(InputError, match="dose_unknown"):
        dataclasses.replace(ConditioningConfig(), dose_unknown="half")


def test_effect_grows_monotonically_with_dose(dosed):
    control = dosed(one_hot(0), encoded(0.0)[None])
    doses = [0.01, 0.1, 1.0, 10.0, 100.0]
    with torch.no_grad():
        sizes = [float((dosed(one_hot(1), encoded(d)[None]) - control).norm()) for d in doses]
    assert all(b > a for a, b in itertools.pairwise(sizes))
    assert sizes[-1] <= float(dosed.weight[1].detach().norm()) + 1e-5  # at most the full effect


def test_undosed_tokens_ignore_the_dose(dosed):
    low = dosed(one_hot(3), encoded(0.0)[None])
    high = dosed(one_hot(3), encoded(10.0)[None])
    assert torch.allclose(low, high)
    assert torch.allclose(low[0], dosed.weight[3])  # not a displacement from the control


def test_hill_parameters_are_trained(dosed):
    out = dosed(one_hot(1), encoded(1.0)[None])
    out.sum().backward()
    assert dosed.hill.grad[1].abs().sum() > 0


def test_condition_encoder_passes_the_dose_and_can_leave_its_embedding_out():
    spec = PerturbationSpec("p", dose_key="d", dose=DOSE, dose_embedding=False, control=0)
    enc = ConditionEncoder({"p": 3}, ["d"], 8, perturbation=spec)
    assert "d" not in enc.encoders  # the Hill curve alone: monotone in dose
    enc.encoders["p"].dosed.copy_(torch.tensor([False, True, False]))
    cond = {"p": torch.eye(3)[[0, 1]], "d": torch.stack([encoded(0.0), encoded(0.0)])}
    out = enc(cond, 2)
    assert torch.allclose(out[0], out[1])  # a drug at dose 0 is the control
    with pytest.raises(KeyError):
        enc({"p": cond["p"]}, 2)  # the dose is still required
