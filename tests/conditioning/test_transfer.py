"""Planning of transfer contexts and interpolation (pure functions, known answers)."""

import numpy as np

from rnadiff.conditioning._transfer import (
    distance_transfer_scale,
    interpolation_neighbours,
    measured_contexts,
    nearest_context_weights,
    relative_transfer_distance,
)

# (cell type, perturbation): the perturbation sits at index 1
SEEN = {("B", "ctrl"), ("B", "stim"), ("T4", "ctrl"), ("T8", "ctrl"), ("T8", "stim"), (None, "x")}


def test_measured_contexts_need_the_control():
    contexts, measured = measured_contexts(SEEN, 1, "ctrl")
    assert contexts == [("B",), ("T4",), ("T8",)]
    assert measured[("T8",)] == {"ctrl", "stim"} and measured[("T4",)] == {"ctrl"}


def test_nearest_context_is_chosen_among_those_with_the_perturbation():
    contexts, measured = measured_contexts(SEEN, 1, "ctrl")
    profile = {("B",): np.array([5.0, 0.0]), ("T4",): np.zeros(2), ("T8",): np.array([1.0, 0])}
    rows = [("T4", "stim"), ("T4", "ctrl"), ("T4", "never")]
    weights = nearest_context_weights(rows, [0, 2], 1, contexts, measured, profile)
    # T4 itself has no stimulated cells; T8 is nearer than B
    assert weights.tolist() == [[0, 0, 1], [0, 0, 0], [0, 0, 0]]
    profile[("B",)] = np.array([-1.0, 0.0])  # a tie: the weight is shared
    weights = nearest_context_weights(rows, [0], 1, contexts, measured, profile)
    assert weights[0].tolist() == [0.5, 0, 0.5]


def test_relative_distance_is_the_nearest_source_over_the_typical_spacing():
    seen = {(c, p) for c in ("A", "B", "C", "D") for p in ("ctrl", "stim")} - {("D", "stim")}
    seen |= {("E", "ctrl"), ("A", "solo")}
    contexts, measured = measured_contexts(seen, 1, "ctrl")
    # squared distances: A-B 1, B-C 4 (A-C 9): each measured type's nearest other is 1, 1, 4
    # -> median spacing 1; D is 0.25 from C (a near-twin), E is 9 from C
    at = {"A": 0.0, "B": 1.0, "C": 3.0, "D": 3.5, "E": 6.0}
    profile = {(k,): np.array([v]) for k, v in at.items()}
    rows = [("D", "stim"), ("E", "stim"), ("D", "ctrl"), ("E", "solo")]
    r = relative_transfer_distance(rows, [0, 1, 3], 1, contexts, measured, profile)
    np.testing.assert_allclose(r[:2], [0.25, 9.0])
    assert np.isnan(r[2])  # not a transferred cell
    assert np.isnan(r[3])  # measured in one context only: no spacing to compare with
    scales = distance_transfer_scale(r, 1.5)
    np.testing.assert_allclose(scales, [1.125, 1.5, 1.5, 1.5])  # NaN: the far scale
    np.testing.assert_allclose(distance_transfer_scale(np.array([0.0, 0.5, 2.0]), 2.0), [1, 1.5, 2])


def test_interpolation_neighbours():
    low, high, where = interpolation_neighbours(
        np.array([48.0, 24.0, 100.0, 12.0, np.nan, -1.0]), [0.0, 24.0, 72.0]
    )
    assert where.tolist() == [True, False, False, True, False, False]
    assert (low[where].tolist(), high[where].tolist()) == ([24.0, 0.0], [72.0, 24.0])


def test_a_pairs_parts_measured_in_its_own_context_are_found():
    import pandas as pd

    from rnadiff.conditioning._conditions import condition_rows, parts_measured_here
    from rnadiff.data._covariates import CovariateRegistry

    train = pd.DataFrame(
        {
            "ct": ["T", "T", "T", "B", "B", "B", "B", "M", "M"],
            "ko": ["ctrl", "A", "B", "ctrl", "A", "B", "A+B", "ctrl", "A"],
        }
    )
    setup = {"perturbation_key": "ko", "control": "ctrl", "cell_type_key": "ct",
             "combination_sep": "+"}  # fmt: skip
    reg = CovariateRegistry.fit(train, setup)
    seen = set(condition_rows(reg, train))
    asked = pd.DataFrame(
        {"ct": ["T", "M", "T", "B", "T", None], "ko": ["B+A", "A+B", "A", "A+B", "A+C", "A+B"]}
    )
    reg = CovariateRegistry.fit(pd.concat([train, asked.dropna()]), setup)
    # T has ctrl, A and B (either order of the pair); M lacks B; a single is no
    # combination; C was measured nowhere; a cell without a context has none
    assert parts_measured_here(reg, seen, asked).tolist() == [
        True, False, False, True, False, False,
    ]  # fmt: skip
