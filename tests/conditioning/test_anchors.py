"""Mean anchors (pure bookkeeping, known answers): which residual a predicted cell takes."""

import numpy as np
import pandas as pd
import pytest

from rnadiff.conditioning._anchors import Anchors, anchor_cells, anchor_targets, shrink
from rnadiff.data._covariates import CovariateRegistry

SETUP = {"perturbation_key": "p", "control": "ctrl", "cell_type_key": "ct", "dose_key": "dose",
         "combination_sep": "+"}  # fmt: skip


@pytest.fixture
def registry():
    obs = pd.DataFrame(
        {
            "ct": ["T", "T", "T", "T", "B", "B", "B", "B", "B"],
            "p": ["ctrl", "A", "A", "K", "ctrl", "A", "K", "A+K", "A+K"],
            "dose": [0.0, 1.0, 100.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0],
        }
    )
    return CovariateRegistry.fit(obs, SETUP), obs


def anchors(rows, doses, residuals):
    # rows as (cell type, perturbation); the registry keys them (perturbation, cell type);
    # the predicted means are the residuals + 100 (composed alike)
    return Anchors(
        tuple((p, ct) for ct, p in rows),
        ("dose",),
        (True,),
        np.array(doses, dtype=float)[:, None],
        np.array(residuals, dtype=np.float32),
        np.array(residuals, dtype=np.float32) + 100,
        np.full(len(rows), 10),
    )


# anchors of the registry fixture's conditions; residual vectors chosen so sums are readable
TABLE = anchors(
    [
        ("T", "ctrl"),
        ("T", "A"),
        ("T", "A"),
        ("T", "K"),
        ("B", "ctrl"),
        ("B", "A"),
        ("B", "K"),
        ("B", "A+K"),
    ],
    [0, 1, 100, 0, 0, 1, 0, 1],
    [[0.5, 0.5], [1, 0], [3, 0], [0, 10], [0, 0], [100, 0], [0, 1000], [7, 7]],
)


def cells(ct, p, dose, source="ctrl"):
    n = len(p)
    src = pd.DataFrame({"ct": [ct] * n, "p": [source] * n, "dose": [0.0] * n})
    tgt = pd.DataFrame({"ct": [ct] * n, "p": p, "dose": dose})
    return src, tgt


def test_anchor_targets_are_measured_conditions_with_their_contexts_controls(registry):
    reg, obs = registry
    found = anchor_targets(reg, obs)
    by_target = {tuple(t): (tuple(s), c) for s, c, t in found}
    assert by_target[(7, 8)] == ((4,), {"p": "A+K", "dose": 1.0})  # B's control cells
    assert by_target[(1,)] == ((0,), {"p": "A", "dose": 1.0})
    assert by_target[(0,)][0] == (0,)  # the control itself is a condition
    assert len(found) == 8 and len(found[0][2]) == 2  # the most cells first


def test_a_measured_condition_takes_its_residual(registry):
    reg, _ = registry
    shift, reference, where = TABLE.shifts(reg, *cells("T", ["A", "K"], [1.0, 0.0]))
    assert where.all()
    np.testing.assert_allclose(shift, [[1, 0], [0, 10]])
    np.testing.assert_allclose(reference, [[101, 100], [100, 110]])


def test_doses_between_are_interpolated_in_log_dose_and_nearest_outside(registry):
    reg, _ = registry
    shift, reference, where = TABLE.shifts(reg, *cells("T", ["A"] * 3, [10.0, 1000.0, 0.5]))
    assert where.all()
    np.testing.assert_allclose(reference[:, 0], [102.0, 103.0, 101.0])
    np.testing.assert_allclose(shift[:, 0], [2.0, 3.0, 1.0])  # 10 is half way in log dose
    shift, _, where = TABLE.shifts(reg, *cells("T", ["A", "K"], [0.0, 0.0]))
    assert where.tolist() == [False, True]  # A at dose 0 is the control; K was measured so


def test_a_pair_of_parts_measured_here_sums_their_residuals(registry):
    reg, _ = registry
    # T: A at dose 10 (interpolated: 2) + K (measured at dose 0 only: its own) - the control's
    # (each part's residual holds the reconstruction's once)
    shift, reference, where = TABLE.shifts(reg, *cells("T", ["A+K", "K+A"], [10.0, 10.0]))
    assert where.all()
    np.testing.assert_allclose(shift, [[1.5, 9.5], [1.5, 9.5]])
    np.testing.assert_allclose(reference, [[101.5, 109.5], [101.5, 109.5]])  # composed alike


def test_a_pairs_interaction_from_another_context_adds_its_residual_there(registry):
    reg, _ = registry
    src, tgt = cells("T", ["A+K"], [1.0])
    shift, _, where = TABLE.shifts(
        reg, src, tgt, interaction=np.array([True]), contexts=[("B",)],
        context_weights=np.array([[1.0]]),
    )  # fmt: skip
    # parts here (1, 0) + (0, 10) - (0.5, 0.5), plus the pair's residual in B minus its
    # parts' there (+ B's control's, 0)
    np.testing.assert_allclose(shift[0], [0.5 + 7 - 100, 9.5 + 7 - 1000])
    assert where[0]


def test_no_anchor_for_other_sources_contexts_or_unknown_perturbations(registry):
    reg, _ = registry
    src, tgt = cells("T", ["A", "A", "Z", "A"], [1.0, 1.0, 1.0, 1.0])
    src.loc[0, "p"] = "K"  # not a control cell
    src.loc[1, "ct"] = "B"  # the cell changes context
    tgt.loc[3, "ct"] = "M"  # a context without anchors (nor the source's)
    src.loc[3, "ct"] = "M"
    shift, _, where = TABLE.shifts(reg, src, tgt)
    assert not where.any() and not shift.any()


def test_anchors_round_trip_through_json():
    back = Anchors.from_json(TABLE.to_json(), TABLE.residuals, TABLE.means)
    assert back.rows == TABLE.rows and back.keys == TABLE.keys and back.log == TABLE.log
    np.testing.assert_array_equal(back.values, TABLE.values)
    unset = anchors([("T", "K")], [np.nan], [[1, 2]])
    again = Anchors.from_json(unset.to_json(), unset.residuals, unset.means)
    assert np.isnan(again.values).all()
    np.testing.assert_allclose(again.residual(("K", "T"), np.array([5.0])), [1, 2])


def test_anchor_cells_moves_a_population_at_its_reference_mean_by_exactly_the_shift():
    x = np.array([[1.0, 1.0, 5.0], [3.0, 0.0, 5.0], [2.0, 2.0, 5.0]], dtype=np.float32)
    shift = np.tile(np.array([1.0, -0.25, -9.0], dtype=np.float32), (3, 1))
    reference = np.tile(x[:2].mean(0), (3, 1))  # the first two cells' means: 2, 0.5, 5
    out = anchor_cells(x, shift, reference, np.array([True, True, False]))
    # gene 0 raised: shifted; gene 1 lowered by half its mean: halved; gene 2 below 0: to 0
    np.testing.assert_allclose(out[:2], [[2.0, 0.5, 0.0], [4.0, 0.0, 0.0]])
    np.testing.assert_array_equal(out[2], x[2])  # not corrected
    np.testing.assert_allclose(out[:2].mean(0), [3.0, 0.25, 0.0])
    assert out.dtype == x.dtype
    # cell by cell: correcting cells one at a time gives the same values
    one = [anchor_cells(x[i : i + 1], shift[:1], reference[:1], np.array([True])) for i in (0, 1)]
    np.testing.assert_array_equal(np.vstack(one), out[:2])


def test_each_genes_residual_is_shrunk_by_its_own_noise():
    r = np.array([2.0, -2.0, 0.5, 0.0])
    # 1 - noise / r^2: 0.75, 0 (noise = r^2), 0 (noise above r^2), 0 (no residual)
    np.testing.assert_allclose(shrink(r, np.array([1.0, 4.0, 1.0, 1.0])), [1.5, 0, 0, 0])
