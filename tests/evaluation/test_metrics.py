import numpy as np
import pytest
from scipy import stats

from rnadiff.evaluation._distances import energy_distance, fit_pca, project
from rnadiff.evaluation._metrics import (
    de_overlap,
    direction_agreement,
    discrimination_score,
    mse_mean,
    pearson_delta,
    population_metrics,
    r2_mean,
    response_metrics,
    top_de_genes,
    wilcoxon_scores,
)


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


# --- mean and DE metrics ---------------------------------------------------------------------


def test_mse_mean_closed_form(populations):
    _, real, _ = populations
    assert mse_mean(real, real) == 0.0
    assert mse_mean(real + 0.5, real) == pytest.approx(0.25)
    offsets = np.linspace(-1, 1, real.shape[1])
    assert mse_mean(real.mean(0) + offsets, real) == pytest.approx((offsets**2).mean())
    with pytest.raises(ValueError):
        mse_mean(real[:, :3], real)


def test_de_overlap_perfect_and_wrong_genes(populations):
    control, real, shift = populations
    assert de_overlap(real, real, control, n=5) == 1.0
    rng = np.random.default_rng(3)
    wrong = rng.gamma(2.0, 0.5, size=(250, 40)) + np.roll(shift, 10)  # effect on genes 10-14
    assert de_overlap(wrong, real, control, n=5) == 0.0
    assert de_overlap(wrong, real, control, n=40) == 1.0  # every gene is in both sets


def test_direction_agreement_perfect_flipped_and_scaled(populations):
    control, real, _ = populations
    assert direction_agreement(real, real, control, n=20) == 1.0
    flipped = 2 * control.mean(0) - real.mean(0)  # the real change with the opposite sign
    assert direction_agreement(flipped, real, control, n=20) == 0.0
    assert direction_agreement(flipped, real, control, n=40) == 0.0
    half = control.mean(0) + 0.1 * (real.mean(0) - control.mean(0))
    assert direction_agreement(half, real, control, n=20) == 1.0  # signs only


@pytest.fixture
def conditions():
    """Five conditions whose changes from control point in different random directions."""
    rng = np.random.default_rng(4)
    control = rng.normal(2.0, 0.3, size=(60, 30))
    effects = {f"p{i}": rng.normal(0, 1.0, size=30) for i in range(5)}
    real = {k: rng.normal(2.0, 0.3, size=(50, 30)) + e for k, e in effects.items()}
    return control, real


@pytest.mark.parametrize("metric", ["l1", "l2"])
def test_discrimination_perfect_and_shuffled(conditions, metric):
    control, real = conditions
    scores, mean = discrimination_score(real, real, control, metric=metric)
    assert scores == {k: 1.0 for k in real} and mean == 1.0
    names = list(real)
    shuffled = {k: real[names[(i + 1) % len(names)]] for i, k in enumerate(names)}
    _, mean_shuffled = discrimination_score(shuffled, real, control, metric=metric)
    assert mean_shuffled < 0.5


def test_discrimination_rank_normalization():
    # real changes on one gene at 1, 2, 3, 4: distances from a prediction are |pred - j|
    control = np.zeros((3, 1))
    real = {f"c{j}": np.full((3, 1), float(j)) for j in (1, 2, 3, 4)}
    pred = {"c1": np.array([4.0]), "c2": np.array([2.0]), "c3": np.array([2.5])}
    scores, mean = discrimination_score(pred, real, control)
    # c1: real c1 is the farthest of 4 -> 0; c2: closest -> 1; c3 ties with c2 -> rank 0.5
    assert scores == {"c1": 0.0, "c2": 1.0, "c3": pytest.approx(1 - 0.5 / 3)}
    assert mean == pytest.approx(np.mean(list(scores.values())))


def test_discrimination_excludes_target_genes():
    # changes over 3 genes (control 0); gene 0 is the target of knock-out "a"
    control = np.zeros((2, 3))
    real = {
        "a": np.array([[0.0, 1.0, 0.0]]),
        "b": np.array([[0.0, 0.0, 0.0]]),
        "c": np.array([[5.0, 1.2, 0.0]]),
    }
    # "a" predicted right except on its target gene; "b" likewise wrong on gene 0
    pred = {"a": np.array([5.0, 1.0, 0.0]), "b": np.array([5.0, 0.0, 0.0])}
    # all genes: a is 5 from real a, 6 from b, 0.2 from c -> rank 1 of 2; b: 6, 5, 1.2 -> 1
    scores, _ = discrimination_score(pred, real, control)
    assert scores == {"a": 0.5, "b": 0.5}
    # without gene 0 for "a": 0, 1, 0.2 -> real a is the closest; "b" still sees gene 0
    kept, mean = discrimination_score(pred, real, control, exclude={"a": [0]})
    assert kept == {"a": 1.0, "b": 0.5} and mean == 0.75
    with pytest.raises(ValueError, match="out of range"):
        discrimination_score(pred, real, control, exclude={"a": [3]})
    with pytest.raises(ValueError, match="every gene"):
        discrimination_score(pred, real, control, exclude={"a": [0, 1, 2]})


def test_discrimination_rejects_bad_conditions(conditions):
    control, real = conditions
    with pytest.raises(ValueError, match="two real"):
        discrimination_score({"p0": real["p0"]}, {"p0": real["p0"]}, control)
    with pytest.raises(ValueError, match="without real"):
        discrimination_score({"other": real["p0"]}, real, control)


# --- all metrics together ----------------------------------------------------------------------

POPULATION_KEYS = {
    "mse_mean",
    "edistance",
    "edistance_pertpy",
    "mmd",
    "de_overlap_top20",
    "de_overlap_top100",
    "direction_agreement_top100",
    "knn_auc",
}


def test_population_metrics_perfect_vs_no_change(populations):
    control, real, _ = populations
    perfect = population_metrics(real, real, control)
    assert set(perfect) == POPULATION_KEYS
    assert perfect["mse_mean"] == 0.0 and perfect["mmd"] == 0.0
    assert perfect["de_overlap_top20"] == 1.0 and perfect["direction_agreement_top100"] == 1.0
    no_change = population_metrics(control, real, control)
    assert abs(perfect["edistance"]) < 0.05 * no_change["edistance"]
    # the same cells: the V-statistic is exactly 0, the U-statistic -2 W / n (W: mean distance)
    assert perfect["edistance_pertpy"] == pytest.approx(0.0, abs=1e-7)
    assert no_change["edistance_pertpy"] > no_change["edistance"]
    assert no_change["mse_mean"] > 0.1 and no_change["mmd"] > 0.05
    assert no_change["knn_auc"] > 0.8
    assert no_change["de_overlap_top20"] < 1.0


def test_population_metrics_uses_the_given_pca(populations):
    control, real, _ = populations
    pca = fit_pca(real, n_components=2)
    pred = real[::-1] + 0.2
    m = population_metrics(pred, real, control, pca=pca)
    zp, zr = project(pred, pca), project(real, pca)
    assert m["edistance"] == pytest.approx(energy_distance(zp, zr))
    assert m["edistance_pertpy"] == pytest.approx(energy_distance(zp, zr, kind="pertpy"))


def test_response_metrics_distributional_keeps_old_keys(populations):
    control, real, _ = populations
    pred = real + 0.1
    base = response_metrics(pred, real, control, top_n=(20, 100))
    full = response_metrics(pred, real, control, top_n=(20, 100), distributional=True)
    assert set(full) == set(base) | POPULATION_KEYS
    assert {k: full[k] for k in base} == base
    for key in ["pearson_delta_top100", "r2_mean_top100", "r2_mean_top20"]:
        assert key in full


def test_population_metrics_new_sample_of_the_real_distribution_scores_as_identical():
    """A second sample of the real population must score like the real cells themselves.

    Principal axes fitted on the real cells (and the control) also fit the real cells' own
    noise, so a new sample looks far from them; the default space is fitted on the two
    compared populations pooled, which treats both alike.
    """
    rng = np.random.default_rng(3)
    scale = np.linspace(2.0, 0.5, 200)  # many noisy genes, few cells: as in small folds

    def cells(n, mean):
        return mean + rng.normal(size=(n, 200)) * scale

    control, real, fresh = cells(80, 0.0), cells(80, 1.0), cells(80, 1.0)
    new = population_metrics(fresh, real, control)
    shifted = population_metrics(fresh + 0.2, real, control)  # every gene 0.2 off
    assert abs(new["edistance"]) < 0.25 * shifted["edistance"]
    # pertpy's V-statistic puts the new sample W (1/n + 1/m) above 0 (W: mean distance between
    # cells), here more than half as far off as the shifted one (0.53 and 0.88)
    assert new["edistance_pertpy"] > 0.5 * shifted["edistance_pertpy"]
    # a space fitted on the real and control cells: the new sample looks farther off than
    # the shifted one does in the pooled space
    real_space = fit_pca(np.vstack([real, control]), n_components=50)
    biased = population_metrics(fresh, real, control, pca=real_space)
    assert biased["edistance"] > shifted["edistance"]
