"""Cell fate: the state composition of predicted cells.

A classifier fitted on reference cells with state labels (:class:`StateClassifier`) assigns
each predicted cell a state; :func:`predict_fate` predicts cells under a target condition and
reports their composition with a bootstrap interval; :func:`composition_error` compares two
compositions (total variation distance).
"""

from rnadiff.fate._composition import (
    StateClassifier,
    adjusted_proportions,
    composition,
    composition_error,
)
from rnadiff.fate._predict import (
    add_states,
    compositions_by,
    fate_table,
    fit_state_classifier,
    plot_fate,
    predict_fate,
)

__all__ = [
    "StateClassifier",
    "add_states",
    "adjusted_proportions",
    "composition",
    "composition_error",
    "compositions_by",
    "fate_table",
    "fit_state_classifier",
    "plot_fate",
    "predict_fate",
]
