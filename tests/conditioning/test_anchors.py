"""Mean anchors (pure bookkeeping, known answers): which residual a predicted cell takes."""

import numpy as np
import pandas as pd
import pytest

from rnadiff.conditioning._anchors import (
    Anchors,
    anchor_cells,
    anchor_targets,
    pooled_shrink,
    shrink,
    transport_targets,
)
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
    assert where.all()  # A at dose 0 is the control: the control's; K was measured so
    np.testing.assert_allclose(shift, [[0.5, 0.5], [0, 10]])
    # a pair never measured here is composed from its parts, never taken for the control at
    # dose 0 (knock-outs are measured at dose 0): here A's part is the control, so none
    _, _, where = TABLE.shifts(reg, *cells("T", ["A+K"], [0.0]))
    assert not where.any()


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


# ------------------------------------------------------------------ a time course
TIME_SETUP = {"time_key": "h", "categorical_keys": ["medium"]}


@pytest.fixture
def course():
    obs = pd.DataFrame(
        {"medium": ["GM", "GM", "DM", "DM", "DM", "DM", "DM"], "h": [0, 0, 24, 24, 72, 72, 72.0]}
    )
    return CovariateRegistry.fit(obs, TIME_SETUP), obs


def transports(rows):
    # (medium, source hour, target hour, residual); predicted means = residual + 100
    res = np.array([r[3] for r in rows], dtype=np.float32)
    return Anchors(
        tuple((r[0],) for r in rows),
        ("h",),
        (False,),
        np.array([[r[2]] for r in rows], dtype=float),
        res,
        res + 100,
        np.full(len(rows), 3),
        np.array([[r[1]] for r in rows], dtype=float),
    )


COURSE = transports(
    [
        ("GM", 0, 0, [1, 1]),
        ("DM", 24, 24, [2, 0]),
        ("DM", 24, 72, [4, 8]),
        ("DM", 72, 24, [-5, -5]),
        ("DM", 72, 72, [0, 6]),
    ]
)


def test_transport_targets_pair_every_measured_time_of_a_context_with_every_other(course):
    reg, obs = course
    assert anchor_targets(reg, obs) == []  # no perturbation column: no control to start from
    found = transport_targets(reg, obs)
    pairs = {(tuple(s), tuple(t)): c for s, c, t in found}
    # GM has one time (itself: the reconstruction); DM's two times each way and themselves
    assert set(pairs) == {
        ((0, 1), (0, 1)),
        ((2, 3), (2, 3)),
        ((2, 3), (4, 5, 6)),
        ((4, 5, 6), (2, 3)),
        ((4, 5, 6), (4, 5, 6)),
    }
    assert pairs[((2, 3), (4, 5, 6))] == {"h": 72.0}
    # nearest first (each time to itself, the most target cells first among those), then the
    # neighbouring times: a cap drops the farthest transports, never a whole source
    assert [tuple(s) == tuple(t) for s, _, t in found] == [True, True, True, False, False]
    assert len(found[0][2]) == 3


def test_a_time_course_cell_takes_the_transports_from_its_own_time(course):
    reg, _ = course
    src = pd.DataFrame({"medium": ["DM"] * 5 + ["GM"], "h": [24, 24, 24, 72, 24, 0.0]})
    tgt = pd.DataFrame({"medium": ["DM"] * 4 + ["GM", "GM"], "h": [24, 48, 96, 48, 48, 0.0]})
    shift, reference, where = COURSE.shifts(reg, src, tgt)
    # 24 -> 24 measured; 24 -> 48 half way between 24 -> 24 and 24 -> 72; 24 -> 96 the
    # nearest (24 -> 72); 72 -> 48 half of 72 -> 24 and 72 -> 72; a change of medium: none;
    # GM 0 -> 0 its reconstruction
    assert where.tolist() == [True, True, True, True, False, True]
    np.testing.assert_allclose(
        shift, [[2, 0], [3, 4], [4, 8], [-2.5, 0.5], [0, 0], [1, 1]]
    )  # fmt: skip
    np.testing.assert_allclose(reference[1], [103, 104])  # composed alike
    # from a time never measured (no transport starts there): none
    shift, _, where = COURSE.shifts(reg, src.assign(h=30.0), tgt)
    assert not where.any() and not shift.any()


def test_transport_sources_round_trip_and_old_checkpoints_read_as_controls():
    back = Anchors.from_json(COURSE.to_json(), COURSE.residuals, COURSE.means)
    np.testing.assert_array_equal(back.sources, COURSE.sources)
    np.testing.assert_allclose(back.residual(("DM",), np.array([48.0]), np.array([24.0])), [3, 4])
    meta = TABLE.to_json()
    del meta["sources"]  # written before time-course anchors
    old = Anchors.from_json(meta, TABLE.residuals, TABLE.means)
    assert np.isnan(old.sources).all()
    np.testing.assert_allclose(old.residual(("A", "T"), np.array([1.0])), [1, 0])


def test_pooled_shrink_keeps_the_part_on_the_axes_and_shrinks_the_rest_per_gene():
    axes = np.array([[0.6], [0.8], [0.0], [0.0]])  # one axis over genes 0 and 1
    coherent = 0.5 * axes[:, 0]  # within every gene's noise: per gene, all of it is lost
    own = np.array([0.0, 0.0, 2.0, 0.1])  # gene 2 far above its noise, gene 3 within it
    noise = np.full(4, 1.0)
    np.testing.assert_allclose(shrink(coherent + own, noise), [0, 0, 1.5, 0])
    np.testing.assert_allclose(pooled_shrink(coherent + own, noise, axes), [0.3, 0.4, 1.5, 0])
