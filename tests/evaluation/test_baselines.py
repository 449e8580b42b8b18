import numpy as np
import pytest

from rnadiff.evaluation._baselines import (
    additive_baseline,
    combination_shift,
    control_baseline,
    linear_baseline,
    nearest_context_additive_baseline,
    nearest_contexts,
    train_mean_baseline,
)


@pytest.fixture
def populations(populations):
    control, _, shift = populations  # the metrics tests' populations, without the real cells
    return control, shift


def test_control_and_additive_baselines(populations):
    control, shift = populations
    src = control.copy()
    assert np.allclose(control_baseline(src), control)
    assert control_baseline(src) is not src
    pred = additive_baseline(src, [shift, shift * 3])
    assert np.allclose(pred, np.clip(control + 2 * shift, 0, None))
    assert np.array_equal(src, control)  # input untouched
    with pytest.raises(ValueError):
        additive_baseline(src, [])


def test_combination_shift_is_the_sum_of_parts(populations):
    control, shift = populations
    other = np.linspace(0, 1, 40)
    assert np.allclose(combination_shift([shift, other]), shift + other)
    pred = additive_baseline(control, [combination_shift([shift, other])])
    assert np.allclose(pred, np.clip(control + shift + other, 0, None), atol=1e-5)
    with pytest.raises(ValueError):
        combination_shift([])
    with pytest.raises(ValueError, match="shapes"):
        combination_shift([shift, other[:3]])


def test_train_mean_baseline_shape_rows_and_seed():
    rng = np.random.default_rng(1)
    cells = rng.normal(size=(50, 6))
    out = train_mean_baseline(cells, 30, seed=0)
    assert out.shape == (30, 6) and out.dtype == np.float32
    rows = {tuple(r) for r in cells.astype(np.float32)}
    assert all(tuple(r) in rows for r in out)
    assert len({tuple(r) for r in out}) == 30  # without replacement while there are enough
    assert np.array_equal(out, train_mean_baseline(cells, 30, seed=0))
    assert not np.array_equal(out, train_mean_baseline(cells, 30, seed=1))
    assert train_mean_baseline(cells, 120, seed=0).shape == (120, 6)  # with replacement
    with pytest.raises(ValueError):
        train_mean_baseline(cells, 0)


def test_train_mean_baseline_weights_conditions_equally():
    big, small = np.zeros((500, 3)), np.ones((5, 3))
    out = train_mean_baseline([big, small], 2000, seed=0)
    assert out[:, 0].mean() == pytest.approx(0.5, abs=0.05)  # not 5 / 505
    with pytest.raises(ValueError):
        train_mean_baseline([], 10)


@pytest.fixture
def additive_world():
    """Pseudobulks that are exactly base[cell type] + effect[A] + effect[B] per gene."""
    rng = np.random.default_rng(2)
    base = {c: rng.uniform(3, 5, size=20) for c in ("T1", "T2", "T3")}
    effect = {"A": rng.normal(0, 1, size=20), "B": rng.normal(0, 1, size=20)}

    def truth(pert: str, cell_type: str) -> np.ndarray:
        parts = [] if pert == "ctrl" else pert.split("+")
        return base[cell_type] + sum((effect[p] for p in parts), np.zeros(20))

    contexts = [(p, c) for p in ("ctrl", "A", "B", "A+B") for c in ("T1", "T2", "T3")]
    return truth, contexts, effect


@pytest.mark.parametrize(
    ("target", "held_out"),
    [
        (("A", "T3"), {("A", "T3")}),
        # a combination never seen, in a cell type never seen perturbed by A
        (("A+B", "T3"), {("A+B", "T1"), ("A+B", "T2"), ("A+B", "T3"), ("A", "T3")}),
    ],
)
def test_linear_baseline_recovers_additive_truth(additive_world, target, held_out):
    truth, contexts, _ = additive_world
    train = {ctx: truth(*ctx) for ctx in contexts if ctx not in held_out}
    source = np.random.default_rng(3).uniform(4, 6, size=(25, 20))
    pred = linear_baseline(source, train, target=target, control="ctrl", ridge=1e-9)
    expected = source + truth(*target) - truth("ctrl", target[1])
    assert np.allclose(pred, expected, atol=1e-4)
    unpenalized = linear_baseline(source, train, target=target, control="ctrl", ridge=0.0)
    assert np.allclose(unpenalized, expected, atol=1e-4)


def test_linear_baseline_ridge_shrinks_to_no_change(additive_world):
    truth, contexts, effect = additive_world
    train = {ctx: truth(*ctx) for ctx in contexts if ctx != ("A", "T3")}
    source = np.full((4, 20), 10.0)
    shifts = [
        linear_baseline(source, train, target=("A", "T3"), control="ctrl", ridge=lam)[0] - 10
        for lam in (0.1, 10.0, 1e6)
    ]
    norms = [np.abs(s).sum() for s in shifts]
    assert norms[0] > norms[1] > norms[2] and norms[2] < 1e-3 * np.abs(effect["A"]).sum()


def test_linear_baseline_rejects_leaks_and_unseen_perturbations(additive_world):
    truth, contexts, _ = additive_world
    train = {ctx: truth(*ctx) for ctx in contexts}
    source = np.ones((3, 20))
    with pytest.raises(ValueError, match="among the training"):
        linear_baseline(source, train, target=("A", "T3"), control="ctrl")
    with pytest.raises(ValueError, match="never seen"):
        linear_baseline(source, train, target=("A+C", "T4"), control="ctrl")


@pytest.fixture
def contexts():
    """Three training contexts: control profiles and (distinct) perturbation shifts."""
    rng = np.random.default_rng(0)
    profiles = {c: rng.uniform(0.5, 2.0, 30) for c in ("A", "B", "C")}
    shifts = {c: rng.normal(0, 0.5, 30) for c in profiles}
    return profiles, shifts


@pytest.mark.parametrize("by", ["sqeuclidean", "correlation"])
@pytest.mark.parametrize("near", ["A", "B", "C"])
def test_nearest_context_additive_takes_the_nearest_contexts_shift(contexts, by, near):
    profiles, shifts = contexts
    rng = np.random.default_rng(1)
    # target cells: a slightly perturbed copy of one context's control profile
    source = np.clip(profiles[near] + rng.normal(0, 0.01, (50, 30)), 0, None)
    assert nearest_contexts(source.mean(0), profiles, by=by) == [near]
    pred = nearest_context_additive_baseline(source, shifts, profiles, by=by)
    assert pred.dtype == np.float32 and pred.shape == source.shape
    assert np.allclose(pred, np.clip(source + shifts[near], 0, None), atol=1e-5)


def test_nearest_context_distance_definitions_differ():
    # B is a scaled copy of the target (correlation 1) but far in squared distance
    target = np.array([1.0, 2.0, 3.0, 4.0])
    profiles = {"A": target + np.array([0.3, -0.3, 0.3, -0.3]), "B": 3 * target}
    assert nearest_contexts(target, profiles, by="sqeuclidean") == ["A"]
    assert nearest_contexts(target, profiles, by="correlation") == ["B"]


def test_nearest_context_ties_share_like_rnadiff():
    from rnadiff.conditioning import nearest_context_weights

    target = np.zeros(3)
    profiles = {"A": np.array([1.0, 0, 0]), "B": np.array([0, 1.0, 0]), "C": np.ones(3)}
    shifts = {"A": np.full(3, 1.0), "B": np.full(3, 3.0), "C": np.full(3, 9.0)}
    assert nearest_contexts(target, profiles) == ["A", "B"]
    pred = nearest_context_additive_baseline(np.ones((2, 3)), shifts, profiles, profile=target)
    assert np.allclose(pred, 1 + 2.0)  # the tied shifts averaged
    # the same choice as rnadiff's compose transfer (conditions are (perturbation, context))
    ctx = [("A",), ("B",), ("C",)]
    rows = [("stim", "T")]
    measured = {c: {"ctrl", "stim"} for c in ctx}
    profile = {("A",): profiles["A"], ("B",): profiles["B"], ("C",): profiles["C"]}
    profile[("T",)] = target
    weights = nearest_context_weights(rows, [0], 0, ctx, measured, profile)
    assert np.allclose(weights, [[0.5, 0.5, 0.0]])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nearest_context_matches_rnadiffs_choice(seed):
    from rnadiff.conditioning import nearest_context_weights

    rng = np.random.default_rng(seed)
    names = [(f"ct{i}",) for i in range(5)]
    profile = {c: rng.normal(size=20) for c in [*names, ("target",)]}
    weights = nearest_context_weights(
        [("stim", "target")], [0], 0, names, {c: {"stim"} for c in names}, profile
    )
    chosen = nearest_contexts(profile[("target",)], {c: profile[c] for c in names})
    assert [names[j] for j in np.flatnonzero(weights[0])] == chosen


def test_nearest_context_rejects_bad_input(contexts):
    profiles, shifts = contexts
    src = np.ones((4, 30))
    with pytest.raises(ValueError, match="both conditions"):
        nearest_context_additive_baseline(src, {}, profiles)
    with pytest.raises(ValueError, match="control profile"):
        nearest_context_additive_baseline(src, {**shifts, "D": shifts["A"]}, profiles)
    with pytest.raises(ValueError, match="by must be"):
        nearest_contexts(src[0], profiles, by="cosine")
    with pytest.raises(ValueError, match="shape"):
        nearest_contexts(src[0, :3], profiles)
