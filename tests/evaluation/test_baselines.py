import numpy as np
import pytest

from rnadiff.evaluation._baselines import (
    additive_baseline,
    combination_shift,
    control_baseline,
    linear_baseline,
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
