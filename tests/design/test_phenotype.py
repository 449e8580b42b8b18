"""Phenotype specifications: thresholds, objectives and errors on known answers."""

import math

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

from rnadiff._errors import InputError
from rnadiff.design import CellState, Combined, Markers, Signature, as_phenotype, fit_logistic

GENES = ["A", "B", "C", "D"]


def reference(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return np.abs(rng.normal([1.0, 2.0, 0.2, 3.0], 0.3, size=(n, 4)))


def test_marker_thresholds_follow_the_fold_change_in_log2_units():
    ref = reference()
    bound = Markers(up=("A",), down=("D",), min_lfc=1.0, margin=0.0).bind(GENES, reference=ref)
    up = ref[:, 0].mean() + math.log(2)
    down = ref[:, 3].mean() - math.log(2)
    x = np.tile(ref.mean(axis=0), (4, 1))
    x[0, [0, 3]] = [up + 0.01, down - 0.01]  # meets both
    x[1, [0, 3]] = [up - 0.01, down - 0.01]  # up gene short
    x[2, [0, 3]] = [up + 0.01, down + 0.01]  # down gene too high
    assert bound.meets(x).tolist() == [True, False, False, False]
    assert bound.values(x)[0] == 0.0
    assert bound.values(x)[3] < bound.values(x)[1] < 0


def test_a_unit_step_along_the_marker_gradient_lands_on_the_threshold_plus_margin():
    ref = reference()
    bound = Markers(up=("A", "B"), down=("D",), margin=0.25).bind(GENES, reference=ref)
    x = torch.tensor(ref[:5], dtype=torch.float32, requires_grad=True)
    (grad,) = torch.autograd.grad(bound.objective(x).sum(), x)
    moved = (x + grad).detach().numpy()
    assert np.allclose(bound.values(moved), 0.0, atol=1e-6)
    assert bound.meets(moved).all()
    assert np.allclose(moved[:, 2], ref[:5, 2])  # genes outside the specification stay


def test_down_markers_of_barely_expressed_genes_are_met_at_zero_within_tolerance():
    ref = reference()  # gene C has mean ~0.25 < ln 2: its threshold is 0
    bound = Markers(down=("C",)).bind(GENES, reference=ref)
    x = np.tile(ref.mean(axis=0), (3, 1))
    x[:, 2] = [0.0, 0.04, 0.2]
    assert bound.meets(x).tolist() == [True, True, False]


def test_percentile_markers_use_the_reference_distribution():
    ref = reference(200)
    bound = Markers(up=("B",), percentile=90, margin=0).bind(GENES, reference=ref)
    assert 0.05 < bound.meets(ref).mean() < 0.15  # about 10% of the reference is above p90


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "at least one gene"),
        ({"up": ("A",), "down": ("A",)}, "both up and down"),
        ({"up": ("A",), "percentile": 100}, "percentile"),
        ({"up": ("A",), "min_lfc": -1}, "non-negative"),
    ],
)
def test_bad_marker_specifications_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        Markers(**kwargs)


def test_unknown_genes_are_named_with_a_case_hint():
    with pytest.raises(InputError, match=r"\['a', 'ZZZ'\].*did you mean \['A'\]"):
        Markers(up=("a", "ZZZ")).bind(GENES, reference=reference())
    with pytest.raises(InputError, match="more than once"):
        Markers(up=("A", "A")).bind(GENES, reference=reference())
    with pytest.raises(InputError, match="reference"):
        Markers(up=("A",)).bind(GENES, reference=None)


def test_signature_vector_objective_is_half_the_squared_distance():
    bound = Signature(pd.Series({"A": 1.0, "C": 0.0}), tolerance=0.5).bind(GENES, reference=None)
    x = np.array([[1.0, 9, 0.0, 9], [2.0, 9, 1.0, 9], [1.6, 9, 0.0, 9]])
    assert np.allclose(bound.values(x), [0.0, -0.5 * (1 + 1), -0.5 * 0.36])
    assert np.allclose(bound.distance(x), [0.0, np.sqrt(2), 0.6])
    # met when the RMS difference over the signature's genes is within the tolerance
    assert bound.meets(x).tolist() == [True, False, True]
    xt = torch.tensor(x[1:2], dtype=torch.float32, requires_grad=True)
    (grad,) = torch.autograd.grad(bound.objective(xt).sum(), xt)
    assert bound.values((xt + grad).detach().numpy())[0] == pytest.approx(0, abs=1e-6)
    with pytest.raises(InputError, match="tolerance"):
        Signature({"A": 1.0}).bind(GENES, reference=None)
    with pytest.raises(InputError, match="empty"):
        Signature({}, tolerance=1).bind(GENES, reference=None)
    with pytest.raises(InputError, match="NaN"):
        Signature({"A": float("nan")}, tolerance=1).bind(GENES, reference=None)


def test_signature_from_target_cells_takes_their_mean_and_own_spread():
    cells = reference(100)
    adata = ad.AnnData(cells.astype(np.float32), var=pd.DataFrame(index=GENES))
    bound = Signature(adata).bind(GENES, reference=None, to_log=lambda a: np.asarray(a.X))
    assert 0.85 <= bound.meets(cells).mean() <= 0.95  # the 90th percentile of their distances
    assert bound.values(cells.mean(axis=0, keepdims=True))[0] == pytest.approx(0, abs=1e-6)


def labelled(n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, size=(n, 4))
    y = np.where(np.arange(n) < n // 2, "on", "off")
    x[y == "on", 1] += 3.0
    adata = ad.AnnData(x.astype(np.float32), var=pd.DataFrame(index=GENES))
    adata.obs["state"] = y
    return adata


def test_logistic_fit_separates_a_shifted_gene():
    cells = labelled()
    w, b = fit_logistic(np.asarray(cells.X), cells.obs["state"].to_numpy() == "on")
    assert np.argmax(np.abs(w)) == 1 and w[1] > 0
    acc = ((np.asarray(cells.X) @ w + b > 0) == (cells.obs["state"] == "on")).mean()
    assert acc > 0.9


def test_cell_state_step_reaches_the_target_probability():
    cells = labelled()
    spec = CellState(cells, label_key="state", state="on", min_prob=0.5, target_prob=0.9)
    bound = spec.bind(GENES, reference=None, to_log=lambda a: np.asarray(a.X))
    off = np.asarray(cells.X)[cells.obs["state"].to_numpy() == "off"]
    assert bound.meets(off).mean() < 0.1
    x = torch.tensor(off, requires_grad=True)
    (grad,) = torch.autograd.grad(bound.objective(x).sum(), x)
    moved = (x + grad).detach().numpy()
    assert bound.meets(moved).all()
    assert np.allclose(bound.values(moved), 0, atol=1e-4)


def test_cell_state_errors_name_the_problem():
    cells = labelled()
    to_log = lambda a: np.asarray(a.X)  # noqa: E731
    with pytest.raises(InputError, match="column 'nope'"):
        CellState(cells, label_key="nope", state="on").bind(GENES, reference=None, to_log=to_log)
    with pytest.raises(InputError, match="state 'x' not among"):
        CellState(cells, label_key="state", state="x").bind(GENES, reference=None, to_log=to_log)


def test_weighted_combinations_average_objectives_and_require_every_term():
    ref = reference()
    up = Markers(up=("A",), margin=0)
    sig = Signature({"C": 0.0}, tolerance=0.1)
    spec = 3 * up + sig
    assert isinstance(spec, Combined) and [w for w, _ in spec.terms()] == [3.0, 1.0]
    bound = spec.bind(GENES, reference=ref)
    parts = [p for _, _, p in bound.parts]
    x = np.tile(ref.mean(axis=0), (2, 1))
    x[0, 0] += 1.0
    x[0, 2] = 0.0
    expected = (3 * parts[0].values(x) + parts[1].values(x)) / 4
    assert np.allclose(bound.values(x), expected)
    assert bound.meets(x).tolist() == [True, False]
    assert isinstance(as_phenotype([up, sig]), Combined)
    with pytest.raises(InputError, match="empty"):
        as_phenotype([])
    with pytest.raises(InputError, match="positive"):
        (-1) * up
