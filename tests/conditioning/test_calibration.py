"""Effect calibration factors (least squares of the observed effect on the predicted one)."""

import numpy as np
import pandas as pd
import pytest

from rnadiff.conditioning._calibration import cell_effect_scales, effect_scales, spread_ratio, widen
from rnadiff.data._covariates import CovariateRegistry


def test_a_shrunk_prediction_gets_the_inverse_factor():
    rng = np.random.default_rng(0)
    true = {k: rng.normal(size=50) for k in "abc"}
    predicted = {"a": 0.5 * true["a"], "b": 0.25 * true["b"], "c": true["c"]}
    scales = effect_scales(predicted, true)
    assert scales == pytest.approx({"a": 2.0, "b": 4.0, "c": 1.0})


def test_noise_in_the_observed_effect_does_not_bias_the_factor():
    rng = np.random.default_rng(1)
    true = rng.normal(size=20000)
    observed = true + rng.normal(scale=2.0, size=true.size)  # noisy training means
    (scale,) = effect_scales({"a": 0.5 * true}, {"a": observed}).values()
    assert scale == pytest.approx(2.0, rel=0.05)
    # the other regression (prediction on observation) would give ~0.5 * 1 / (1 + 4) = 0.1
    assert (0.5 * true) @ observed / (observed @ observed) < 0.2


def test_factors_are_clipped_and_a_zero_prediction_gets_one():
    observed = {"a": np.ones(3), "b": np.ones(3), "c": -np.ones(3), "d": np.ones(3)}
    predicted = {"a": 0.01 * np.ones(3), "b": np.zeros(3), "c": np.ones(3), "d": np.ones(3)}
    scales = effect_scales(predicted, observed, bounds=(0.5, 5.0))
    assert scales == {"a": 5.0, "b": 1.0, "c": 0.5, "d": 1.0}


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="shape"):
        effect_scales({"a": np.ones(3)}, {"a": np.ones(4)})
    with pytest.raises(ValueError, match="bounds"):
        effect_scales({"a": np.ones(3)}, {"a": np.ones(3)}, bounds=(2.0, 5.0))


def test_spread_ratio_of_a_shrunk_copy_is_the_shrinking():
    rng = np.random.default_rng(1)
    real = rng.normal(5.0, 1.0, size=(50, 8))
    moved = real.mean(0) + 0.8 * (real - real.mean(0))  # same cells, 0.8 of the spread
    assert spread_ratio(moved, real) == pytest.approx(1 / 0.8)
    assert spread_ratio(real, real) == pytest.approx(1.0)
    assert spread_ratio(real + 3.0, real) == pytest.approx(1.0)  # a shift is not spread
    # total variance over genes, not per gene: one gene twice as wide moves the ratio less
    wider = real.copy()
    wider[:, 0] = real[:, 0].mean() + 2 * (real[:, 0] - real[:, 0].mean())
    var = real.var(0, ddof=1)
    expected = np.sqrt((var.sum() + 3 * var[0]) / var.sum())
    assert spread_ratio(real, wider) == pytest.approx(expected)


def test_spread_ratio_of_degenerate_populations():
    const = np.ones((4, 3))
    assert spread_ratio(const, const) == 1.0
    assert spread_ratio(const, np.arange(12.0).reshape(4, 3)) == float("inf")
    assert spread_ratio(np.arange(12.0).reshape(4, 3), const) == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        spread_ratio(np.ones((1, 3)), const)
    with pytest.raises(ValueError, match="cells, genes"):
        spread_ratio(np.ones((4, 3)), np.ones((4, 2)))


def test_widen_scales_each_group_around_its_own_mean():
    rng = np.random.default_rng(2)
    x = rng.normal(10.0, 1.0, size=(40, 5))  # far from 0: nothing is clipped
    x[20:] += 5.0
    groups = np.array(["a"] * 20 + ["b"] * 20)
    out = widen(x, groups, 1.5)
    for rows in (slice(0, 20), slice(20, 40)):
        np.testing.assert_allclose(out[rows].mean(0), x[rows].mean(0))
        np.testing.assert_allclose(out[rows] - out[rows].mean(0), 1.5 * (x[rows] - x[rows].mean(0)))
    # widened around the groups' own means, not the pooled one: the gap between them stays
    assert out[20:].mean() - out[:20].mean() == pytest.approx(x[20:].mean() - x[:20].mean())
    np.testing.assert_array_equal(widen(x, groups, 1.0), x)
    assert widen(x.astype(np.float32), groups, 1.2).dtype == np.float32


def test_widen_keeps_values_non_negative_and_means_unchanged():
    rng = np.random.default_rng(3)
    x = rng.exponential(0.5, size=(100, 6)) * (rng.random((100, 6)) < 0.4)  # mostly zeros
    x[:, 5] = 0.0  # a gene that is never expressed
    out = widen(x, np.zeros(100), 1.3)
    assert (out >= 0).all()
    np.testing.assert_allclose(out.mean(0), x.mean(0), atol=1e-12)  # clipping alone raises it
    assert (out.var(0)[:5] > x.var(0)[:5]).all()
    np.testing.assert_array_equal(out[:, 5], 0.0)
    single = widen(x[:3], np.array(["a", "b", "c"]), 2.0)  # groups of one cell: unchanged
    np.testing.assert_allclose(single, x[:3])


def test_widen_rejects_bad_input():
    with pytest.raises(ValueError, match="group labels"):
        widen(np.ones((3, 2)), np.zeros(2), 1.1)
    with pytest.raises(ValueError, match="positive"):
        widen(np.ones((3, 2)), np.zeros(3), 0.0)
    with pytest.raises(ValueError, match="non-negative"):
        widen(-np.ones((3, 2)), np.zeros(3), 1.1)


def test_each_cell_takes_its_perturbations_scale_its_priors_mix_or_its_parts_mean():
    obs = pd.DataFrame({"p": ["ctrl", "A", "B", "A+B"]})
    setup = {"perturbation_key": "p", "control": "ctrl", "combination_sep": "+"}
    reg = CovariateRegistry.fit(obs, setup)
    scales = {"A": 2.0, "B": 4.0}
    values = ["A", "B", "ctrl", "A+B", "Z", None]
    out, prior = cell_effect_scales(
        reg["p"], scales, pd.Series(values), lambda name: {"A": 0.25, "B": 0.75}
    )
    # measured: its own; the control: 1; a pair without a scale of its own: its parts' mean;
    # "Z" never seen: the prior's mix 0.25 * 2 + 0.75 * 4; unset: 1
    np.testing.assert_allclose(out, [2.0, 4.0, 1.0, 3.0, 3.5, 1.0])
    assert prior.tolist() == [False, False, False, False, True, False]
