"""Planning of transfer contexts and interpolation (pure functions, known answers)."""

import numpy as np

from rnadiff.conditioning._transfer import (
    interpolation_neighbours,
    measured_contexts,
    nearest_context_weights,
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


def test_interpolation_neighbours():
    low, high, where = interpolation_neighbours(
        np.array([48.0, 24.0, 100.0, 12.0, np.nan, -1.0]), [0.0, 24.0, 72.0]
    )
    assert where.tolist() == [True, False, False, True, False, False]
    assert (low[where].tolist(), high[where].tolist()) == ([24.0, 0.0], [72.0, 24.0])
