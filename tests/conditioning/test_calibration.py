"""Effect calibration factors (least squares of the observed effect on the predicted one)."""

import numpy as np
import pytest

from rnadiff.conditioning.calibration import effect_scales


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
