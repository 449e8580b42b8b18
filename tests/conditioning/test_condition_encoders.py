"""Covariate encoders: set embeddings of combinations, Fourier embeddings, learned nulls."""

from __future__ import annotations

import math

import pytest
import torch

from rnadiff.conditioning import ConditionEncoder, FourierEmbedding, SetEmbedding


def _with_random_null(module):
    # The null embedding starts at zero, which would hide a missing null substitution.
    with torch.no_grad():
        module.null.copy_(torch.randn_like(module.null))
    return module


def test_set_embedding_of_a_combination_is_the_sum_of_its_parts():
    torch.manual_seed(0)
    emb = _with_random_null(SetEmbedding(3, 8))
    rows = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    out = emb(rows)

    assert out.shape == (4, 8)
    torch.testing.assert_close(out[0], emb.weight[0])
    torch.testing.assert_close(out[1], emb.weight[1])
    torch.testing.assert_close(out[2], out[0] + out[1])
    torch.testing.assert_close(out[3], emb.weight.sum(dim=0))


def test_set_embedding_null_row_gets_the_null_vector():
    torch.manual_seed(0)
    emb = _with_random_null(SetEmbedding(3, 8))
    out = emb(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]))
    assert torch.equal(out[0], emb.null)
    assert torch.equal(out[2], emb.null)
    torch.testing.assert_close(out[1], emb.weight[2])


def test_fourier_embedding_nan_gets_the_null_vector_and_stays_finite():
    torch.manual_seed(0)
    emb = _with_random_null(FourierEmbedding(8))
    value = torch.tensor([0.5, math.nan, -1.0, math.nan], requires_grad=True)
    out = emb(value)

    assert out.shape == (4, 8)
    assert torch.isfinite(out).all()
    assert torch.equal(out[1], emb.null)
    assert torch.equal(out[3], emb.null)
    assert not torch.allclose(out[0], emb.null)
    assert not torch.allclose(out[0], out[2]), "different values must embed differently"
    # A NaN (dropped) cell must not poison the gradients of the shared MLP.
    out.sum().backward()
    for p in emb.parameters():
        assert torch.isfinite(p.grad).all()


def test_fourier_embedding_is_a_function_of_the_value_only():
    torch.manual_seed(0)
    emb = FourierEmbedding(8)
    alone = emb(torch.tensor([0.25]))
    in_batch = emb(torch.tensor([3.0, 0.25, math.nan]))
    torch.testing.assert_close(in_batch[1], alone[0])


def _encoder():
    torch.manual_seed(0)
    return ConditionEncoder({"pert": 3, "cell_type": 2}, ["dose"], dim=8)


def _cond():
    return {
        "pert": torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]),
        "cell_type": torch.tensor([[0.0, 1.0], [1.0, 0.0]]),
        "dose": torch.tensor([0.3, math.nan]),
    }


def test_condition_encoder_sums_its_covariate_embeddings():
    enc, cond = _encoder(), _cond()
    out = enc(cond, 2)
    expected = sum(enc.encoders[k](v) for k, v in cond.items())
    assert out.shape == (2, 8)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("missing", ["pert", "cell_type", "dose"])
def test_condition_encoder_raises_on_a_missing_covariate(missing):
    cond = {k: v for k, v in _cond().items() if k != missing}
    with pytest.raises(KeyError, match=missing):
        _encoder()(cond, 2)


def test_condition_encoder_raises_without_any_condition():
    with pytest.raises(KeyError):
        _encoder()(None, 2)


def test_condition_encoder_without_covariates_gives_zeros():
    enc = ConditionEncoder({}, [], dim=4)
    assert torch.equal(enc(None, 3), torch.zeros(3, 4))
