import numpy as np
import pytest
from scipy import stats

from rnadiff.evaluation.baselines import additive_baseline, control_baseline
from rnadiff.evaluation.metrics import (
    pearson_delta,
    r2_mean,
    response_metrics,
    top_de_genes,
    wilcoxon_scores,
)


@pytest.fixture
def populations():
    rng = np.random.default_rng(0)
    control = rng.gamma(2.0, 0.5, size=(300, 40))
    shift = np.zeros(40)
    shift[:5] = [2.0, -1.0, 1.5, 0.8, -0.6]
    real = rng.gamma(2.0, 0.5, size=(250, 40)) + shift
    return control, real, shift


def test_r2_identical_is_one_and_mean_prediction_is_zero(populations):
    _, real, _ = populations
    assert r2_mean(real, real) == pytest.approx(1.0)
    flat = np.full(real.shape[1], real.mean())
    assert r2_mean(flat, real) == pytest.approx(0.0, abs=1e-12)


def test_r2_penalizes_offset_that_correlation_ignores(populations):
    _, real, _ = populations
    shifted = real + 1.0
    assert np.corrcoef(shifted.mean(0), real.mean(0))[0, 1] == pytest.approx(1.0)
    assert r2_mean(shifted, real) < 0.5


def test_pearson_delta_identical_shuffled_and_degenerate(populations):
    control, real, _ = populations
    assert pearson_delta(real, real, control) == pytest.approx(1.0)
    # scaling the change keeps the correlation
    pred = control.mean(0) + 0.5 * (real.mean(0) - control.mean(0))
    assert pearson_delta(pred, real, control) == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    shuffled = real[:, rng.permutation(real.shape[1])]
    assert pearson_delta(shuffled, real, control) < 0.5
    assert np.isnan(pearson_delta(control, real, control))  # no predicted change at all


def test_wilcoxon_matches_scipy_mannwhitneyu():
    rng = np.random.default_rng(2)
    a = rng.poisson(2.0, size=(30, 3)).astype(float)  # many ties
    b = rng.poisson(1.0, size=(40, 3)).astype(float)
    z = wilcoxon_scores(a, b)
    for j in range(3):
        res = stats.mannwhitneyu(a[:, j], b[:, j], method="asymptotic", use_continuity=False)
        expected = stats.norm.isf(res.pvalue / 2) * np.sign(z[j])
        assert z[j] == pytest.approx(expected, rel=1e-6)


def test_top_de_genes_finds_planted_genes(populations):
    control, real, _ = populations
    assert set(top_de_genes(real, control, 5)) == {0, 1, 2, 3, 4}


def test_response_metrics_keys_and_perfect_prediction(populations):
    control, real, _ = populations
    m = response_metrics(real, real, control, top_n=(5, 20))
    for key in ["r2_mean_all", "pearson_delta_all", "r2_mean_top5", "pearson_delta_top20"]:
        assert m[key] == pytest.approx(1.0)


def test_baselines(populations):
    control, _real, shift = populations
    src = control.copy()
    assert np.allclose(control_baseline(src), control)
    assert control_baseline(src) is not src
    pred = additive_baseline(src, [shift, shift * 3])
    assert np.allclose(pred, np.clip(control + 2 * shift, 0, None))
    assert np.array_equal(src, control)  # input untouched
    with pytest.raises(ValueError):
        additive_baseline(src, [])
