"""Drugs never measured (pure bookkeeping, known answers): their mean change is moved to the
blend of the measured drugs' changes."""

import numpy as np
import pandas as pd
import pytest

from rnadiff.conditioning._anchors import Anchors, anchor_cells
from rnadiff.conditioning._unseen_drugs import drug_weights, unseen_drug_shifts
from rnadiff.data._covariates import CovariateRegistry

SETUP = {"perturbation_key": "p", "control": "ctrl", "cell_type_key": "ct", "dose_key": "dose"}


def test_drug_weights_blend_the_nearest_structures_with_the_shares_of_the_measured():
    sims = {("U", "A"): 0.9, ("U", "B"): 0.2, ("U", "C"): 0.1}

    def similarity(a, b):
        return sims[(a, b)]

    shares = {"A": 10, "B": 30, "C": 60, "KO": 100}
    kw = dict(shares=shares, similarity=similarity, molecules=["A", "B", "C"])
    average = drug_weights("U", ["A", "B", "C", "KO"], trust=0.0, **kw)
    assert average == pytest.approx({"A": 0.05, "B": 0.15, "C": 0.3, "KO": 0.5})
    nearest = drug_weights("U", ["A", "B", "C", "KO"], trust=1.0, **kw)
    assert set(nearest) == {"A", "B", "C"} and max(nearest, key=nearest.get) == "A"
    assert sum(nearest.values()) == pytest.approx(1.0)
    # only what is measured there counts; without a structure among it, the average alone
    only = drug_weights("U", ["B", "KO"], trust=1.0, **kw)
    assert only == pytest.approx({"B": 1.0})
    assert drug_weights("U", ["KO"], trust=0.7, **kw) == pytest.approx({"KO": 1.0})
    assert drug_weights("U", [], trust=0.7, **kw) == {}


@pytest.fixture
def registry():
    obs = pd.DataFrame(
        {
            "ct": ["T"] * 5 + ["B"] * 2,
            "p": ["ctrl", "A", "A", "C", "U", "ctrl", "A"],
            "dose": [0.0, 1.0, 100.0, 10.0, 1.0, 0.0, 1.0],
        }
    )
    return CovariateRegistry.fit(obs, SETUP)


def table():
    # anchored means (residual + mean): control 1, A at 1 and 100: 2 and 4, C at 10: 10 (gene 0)
    rows = (("ctrl", "T"), ("A", "T"), ("A", "T"), ("C", "T"), ("ctrl", "B"), ("A", "B"))
    means = np.array([[1, 5], [2, 5], [4, 5], [10, 5], [0, 0], [7, 7]], dtype=np.float32)
    residuals = np.full_like(means, 0.5)
    return Anchors(
        rows, ("dose",), (True,), np.array([[0], [1], [100], [10], [0], [1]], dtype=float),
        residuals, means - residuals, np.full(6, 10),
    )  # fmt: skip


def cells(ct, p, dose, source="ctrl", n=4):
    src = pd.DataFrame({"ct": [ct] * n, "p": [source] * n, "dose": [0.0] * n})
    tgt = pd.DataFrame({"ct": [ct] * n, "p": [p] * n, "dose": [dose] * n})
    return src, tgt


def equal_weights(drug, measured):
    return {k: 1 / len(measured) for k in measured}


def _shifts(reg, src, tgt, x_src, x_pred, weights_of=equal_weights):
    return unseen_drug_shifts(
        table(), reg, src, tgt, x_src, x_pred, unseen=["U"], weights_of=weights_of
    )


def test_the_group_mean_change_becomes_the_blend_exactly(registry):
    rng = np.random.default_rng(0)
    src, tgt = cells("T", "U", 10.0)
    x_src = rng.uniform(1, 2, size=(4, 2)).astype(np.float32)
    x_pred = rng.uniform(3, 4, size=(4, 2)).astype(np.float32)
    shift, reference, where, used = _shifts(registry, src, tgt, x_src, x_pred)
    assert where.all() and used == {"U": {"A": 0.5, "C": 0.5}}
    # A at 10 (log-dose halfway between 1 and 100): 3, C at 10: 10, control 1 -> changes 2, 9
    moved = anchor_cells(x_pred, shift, reference, where)
    change = moved.mean(0) - x_src.mean(0)
    np.testing.assert_allclose(change, [0.5 * 2 + 0.5 * 9, 0.0], atol=1e-5)
    # each cell keeps its own variation: shifted where raised (gene 0), scaled where lowered
    np.testing.assert_allclose(
        moved[:, 0] - moved[:, 0].mean(), x_pred[:, 0] - x_pred[:, 0].mean(), atol=1e-5
    )
    ratio = moved[:, 1] / x_pred[:, 1]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)


def test_weights_see_only_what_is_measured_in_the_context(registry):
    seen = []

    def record(drug, measured):
        seen.append(sorted(measured))
        return {measured[0]: 1.0}

    src, tgt = cells("B", "U", 1.0)
    x = np.ones((4, 2), dtype=np.float32)
    shift, _reference, where, _used = _shifts(registry, src, tgt, x, x, record)
    assert seen == [["A"]] and where.all()
    np.testing.assert_allclose(shift[0], [7.0, 7.0])  # A in B (7) minus control in B (0)


def test_only_control_sourced_cells_of_unseen_drugs_move(registry):
    x = np.ones((4, 2), dtype=np.float32)
    for src, tgt in (
        cells("T", "A", 1.0),  # a seen drug: the anchors' business
        cells("T", "U", 1.0, source="A"),  # not from the control
    ):
        assert not _shifts(registry, src, tgt, x, x)[2].any()
    src, _ = cells("T", "U", 1.0)
    _, tgt = cells("B", "U", 1.0)  # another context than the source's
    assert not _shifts(registry, src, tgt, x, x)[2].any()
    src, tgt = cells("T", "U", 1.0)
    none = unseen_drug_shifts(
        table(), registry, src, tgt, x, x, unseen=[], weights_of=equal_weights
    )
    assert not none[2].any() and none[3] == {}
