"""Null values of covariates: zero rows for multi-hot matrices, NaN for continuous vectors."""

from __future__ import annotations

import math

import pytest
import torch

from rnadiff.conditioning import drop_covariates, is_null, null_like, random_drop


def _cond(n=6):
    pert = torch.zeros(n, 3)
    pert[torch.arange(n), torch.arange(n) % 3] = 1.0
    pert[0, 1] = 1.0  # a combination
    cell_type = torch.zeros(n, 2)
    cell_type[torch.arange(n), torch.arange(n) % 2] = 1.0
    dose = torch.linspace(-1.0, 1.0, n)
    return {"pert": pert, "cell_type": cell_type, "dose": dose}


def _clone(cond):
    return {k: v.clone() for k, v in cond.items()}


def _same(a, b):
    return a.shape == b.shape and bool(torch.isclose(a, b, equal_nan=True).all())


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (torch.tensor([[1.0, 0.0], [0.5, 2.0]]), torch.zeros(2, 2)),
        (torch.tensor([0.3, -1.0, 2.0]), torch.full((3,), math.nan)),
    ],
)
def test_null_like(value, expected):
    before = value.clone()
    null = null_like(value)
    assert _same(null, expected)
    assert null.dtype == value.dtype
    assert is_null(null).all()
    assert torch.equal(value, before)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]), [False, True, False]),
        (torch.tensor([[0.0, -1.0], [1.0, -1.0]]), [False, False]),  # sums cancel: not null
        (torch.tensor([0.0, math.nan, -2.0]), [False, True, False]),  # 0 is a valid value
    ],
)
def test_is_null(value, expected):
    assert is_null(value).tolist() == expected


def test_drop_covariates_nulls_only_the_named_ones():
    cond = _cond()
    before = _clone(cond)
    out = drop_covariates(cond, ["pert", "dose"])

    assert set(out) == set(cond)
    assert is_null(out["pert"]).all()
    assert is_null(out["dose"]).all()
    assert torch.equal(out["cell_type"], cond["cell_type"])
    for key in cond:
        assert torch.equal(cond[key], before[key]), "input modified"


def test_drop_covariates_edge_cases():
    cond = _cond()
    assert drop_covariates(None, ["pert"]) is None
    none_dropped = drop_covariates(cond, [])
    assert all(torch.equal(none_dropped[k], cond[k]) for k in cond)
    with pytest.raises(KeyError, match="batch"):
        drop_covariates(cond, ["batch"])


def test_random_drop_with_zero_probability_keeps_everything():
    cond = _cond()
    out = random_drop(cond, 0.0, generator=torch.Generator().manual_seed(0))
    assert out is not cond
    assert all(torch.equal(out[k], cond[k]) for k in cond)


def test_random_drop_with_probability_near_one_nulls_nearly_all():
    cond = _cond(n=2000)
    out = random_drop(cond, 0.999, generator=torch.Generator().manual_seed(0))
    for key in cond:
        assert is_null(out[key]).float().mean() > 0.99, key


@pytest.mark.parametrize("p", [0.15, 0.5])
def test_random_drop_rate_rows_and_independence(p):
    n = 20_000
    cond = _cond(n=n)
    before = _clone(cond)
    out = random_drop(cond, p, generator=torch.Generator().manual_seed(0))

    for key in cond:
        assert torch.equal(cond[key], before[key]), "input modified"
    dropped = {k: is_null(out[k]) for k in cond}
    se = math.sqrt(p * (1 - p) / n)  # tolerances: 5 standard errors of a proportion
    for key, mask in dropped.items():
        assert mask.float().mean().item() == pytest.approx(p, abs=5 * se), key
        # A kept cell keeps its whole value; a dropped one becomes entirely null.
        assert _same(out[key][~mask], cond[key][~mask])
        assert _same(out[key][mask], null_like(cond[key][mask]))
    # Covariates are dropped independently: both at once with probability p^2.
    both = (dropped["pert"] & dropped["dose"]).float().mean().item()
    assert both == pytest.approx(p * p, abs=5 * math.sqrt(p * p * (1 - p * p) / n))


def test_random_drop_is_reproducible_with_a_seeded_generator():
    cond = _cond(n=500)

    def draw(seed, c=cond):
        return random_drop(c, 0.5, generator=torch.Generator().manual_seed(seed))

    a, b, c = draw(7), draw(7), draw(8)
    assert all(_same(a[k], b[k]) for k in cond)
    assert not all(_same(a[k], c[k]) for k in cond)
    # The draws do not depend on the order of the keys in the dict.
    reordered = draw(7, dict(reversed(list(cond.items()))))
    assert all(_same(a[k], reordered[k]) for k in cond)
