"""Exponential moving average of the weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnadiff.training import make_ema, update_ema


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.register_buffer("count", torch.zeros(2))


def _pair(seed=0):
    torch.manual_seed(seed)
    model = _Net()
    ema = make_ema(model)
    with torch.no_grad():  # the model moves away from the average
        for p in model.parameters():
            p.add_(torch.randn_like(p))
        model.count.fill_(5.0)
    return model, ema


def test_make_ema_is_a_frozen_independent_copy():
    torch.manual_seed(0)
    model = _Net().train()
    ema = make_ema(model)
    assert not ema.training
    assert all(not p.requires_grad for p in ema.parameters())
    assert all(p.requires_grad for p in model.parameters())
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        assert torch.equal(e, p)
        assert e.data_ptr() != p.data_ptr()


@pytest.mark.parametrize(
    ("decay", "step", "d"),
    [
        (0.999, 0, 0.1),  # warm-up: d = (1 + 0) / (10 + 0)
        (0.999, 10, 11 / 20),
        (0.999, 100_000, 0.999),  # after warm-up: d = decay
        (0.5, 100, 0.5),
        (0.0, 5, 0.0),  # no averaging: the EMA is the model
    ],
)
def test_update_ema_one_step(decay, step, d):
    model, ema = _pair()
    old = [e.clone() for e in ema.parameters()]
    update_ema(ema, model, decay=decay, step=step)
    for e, e_old, p in zip(ema.parameters(), old, model.parameters(), strict=True):
        torch.testing.assert_close(e, d * e_old + (1 - d) * p)
    assert torch.equal(ema.count, model.count), "buffers are copied, not averaged"


def test_update_ema_leaves_the_model_alone():
    model, ema = _pair()
    before = [p.clone() for p in model.parameters()]
    update_ema(ema, model, decay=0.9, step=50)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


def test_repeated_updates_converge_to_a_fixed_model():
    model, ema = _pair()
    for step in range(200):
        update_ema(ema, model, decay=0.9, step=step)
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(e, p, atol=1e-6, rtol=0)
