import numpy as np
import pytest
from scipy import stats

from rnadiff.evaluation._distances import (
    energy_distance,
    fit_pca,
    knn_auc,
    median_bandwidths,
    mmd_rbf,
    project,
)
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


# --- PCA space and population distances --------------------------------------------------------


def test_fit_pca_matches_covariance_eigendecomposition():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(200, 12)) * np.linspace(3, 0.5, 12)
    pca = fit_pca(x, n_components=4)
    evals, evecs = np.linalg.eigh(np.cov(x, rowvar=False))
    assert np.allclose(pca.explained_variance, evals[::-1][:4])
    assert np.allclose(np.abs(pca.components @ evecs[:, ::-1][:, :4]), np.eye(4), atol=1e-6)
    z = project(x, pca)
    assert np.allclose(z.mean(0), 0, atol=1e-10)
    assert np.allclose(z.var(0, ddof=1), pca.explained_variance)
    assert fit_pca(x, n_components=50).n_components == 12  # capped at the number of genes


def test_fit_pca_randomized_agrees_with_exact():
    rng = np.random.default_rng(6)
    low_rank = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 80)) * 3
    x = low_rank + 0.1 * rng.normal(size=(300, 80))
    exact = fit_pca(x, n_components=5, method="exact")
    fast = fit_pca(x, n_components=5, method="randomized", seed=1)
    assert np.allclose(project(x, fast), project(x, exact), atol=1e-6)


def test_fit_pca_rejects_single_cell_and_wrong_genes():
    with pytest.raises(ValueError, match="at least 2"):
        fit_pca(np.ones((1, 5)))
    pca = fit_pca(np.random.default_rng(0).normal(size=(10, 5)), n_components=2)
    with pytest.raises(ValueError, match="genes"):
        project(np.ones((3, 4)), pca)


def _gaussian_energy(mu: float) -> float:
    """E-distance of N(0, 1) and N(mu, 1): 2 E|X - Y| - 2 E|X - X'|, X - Y ~ N(-mu, 2)."""
    s = np.sqrt(2)
    e_xy = s * np.sqrt(2 / np.pi) * np.exp(-(mu**2) / (2 * s**2)) + mu * (
        1 - 2 * stats.norm.cdf(-mu / s)
    )
    return 2 * e_xy - 2 * 2 / np.sqrt(np.pi)


@pytest.mark.parametrize("mu", [0.0, 0.5, 1.0, 3.0])
def test_energy_distance_gaussian_closed_form(mu):
    n = 1000
    x = stats.norm.ppf((np.arange(n) + 0.5) / n)[:, None]  # an evenly spread N(0, 1) sample
    assert energy_distance(x, x + mu) == pytest.approx(_gaussian_energy(mu), abs=5e-3)


@pytest.mark.parametrize("d", [0.5, 3.0])
def test_energy_distance_point_masses_is_twice_the_distance(d):
    x = np.zeros((4, 3))
    y = np.tile([d, 0.0, 0.0], (7, 1))
    assert energy_distance(x, y) == pytest.approx(2 * d)
    assert energy_distance(x, x) == 0.0  # constant genes: finite, zero


def test_energy_distance_of_a_sample_with_itself_and_symmetry():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(30, 4)), rng.normal(1.0, size=(20, 4))
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    mean_distinct = d.sum() / (30 * 29)
    # cross term includes the zero self-pairs, the within term does not: -2 mean / n
    assert energy_distance(x, x) == pytest.approx(-2 * mean_distinct / 30)
    assert energy_distance(x, y) == pytest.approx(energy_distance(y, x))
    with pytest.raises(ValueError, match="at least 2"):
        energy_distance(x[:1], y)


def test_energy_distance_grows_with_shift():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(200, 5)), rng.normal(size=(200, 5))
    values = [energy_distance(x, y + s) for s in (0.0, 0.5, 1.0, 2.0)]
    assert abs(values[0]) < 0.1 * values[1]
    assert np.all(np.diff(values) > 0)


def test_mmd_identical_shift_and_point_mass_closed_form():
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(300, 5)), rng.normal(size=(300, 5))
    assert mmd_rbf(x, x) == 0.0
    bw = median_bandwidths(y)
    values = [mmd_rbf(x + s, y, bandwidths=bw) for s in (0.0, 0.5, 1.0, 2.0)]
    assert values[0] < 0.2 * values[1]  # the biased estimate is O(1/n) above 0
    assert np.all(np.diff(values) > 0)
    # one kernel, point masses at distance d: 1 + 1 - 2 exp(-d^2 / (2 s^2))
    a, b = np.zeros((3, 2)), np.tile([1.5, 0.0], (5, 1))
    assert mmd_rbf(a, b, bandwidths=[2.0]) == pytest.approx(2 - 2 * np.exp(-(1.5**2) / 8))
    assert mmd_rbf(a[:1], b[:1], bandwidths=[2.0]) > 0  # single cells are fine
    with pytest.raises(ValueError, match="positive"):
        mmd_rbf(a, b, bandwidths=[0.0])


def test_median_bandwidths_and_degenerate_cells():
    x = np.array([[0.0], [1.0], [3.0]])  # distances 1, 2, 3: median 2
    assert np.allclose(median_bandwidths(x), [1.0, 2.0, 4.0, 8.0])
    same = np.ones((5, 3))
    assert np.allclose(median_bandwidths(same), [0.5, 1.0, 2.0, 4.0])
    # pooled nonzero distances are all sqrt(3): bandwidths sqrt(3) * scales
    expected = 2 - 2 * np.mean(np.exp(-1 / (2 * np.array([0.5, 1.0, 2.0, 4.0]) ** 2)))
    assert mmd_rbf(same, same + 1) == pytest.approx(expected)


def test_knn_auc_same_distribution_separated_and_copies():
    rng = np.random.default_rng(10)
    real, other = rng.normal(size=(600, 5)), rng.normal(size=(800, 5))
    assert knn_auc(real, other) == pytest.approx(0.5, abs=0.06)
    assert knn_auc(real, other + 4.0) > 0.99
    # copies of real cells: each one's nearest neighbour is its real twin
    assert knn_auc(real, real.copy(), k=1) < 0.1
    assert knn_auc(real, other, seed=3) == knn_auc(real, other, seed=3)


def test_knn_auc_degenerate_inputs():
    same = np.ones((40, 3))
    auc = knn_auc(same, same)
    assert 0.0 <= auc <= 1.0
    with pytest.raises(ValueError, match="at least 2"):
        knn_auc(same[:1], same)


# --- all metrics together ----------------------------------------------------------------------

POPULATION_KEYS = {
    "mse_mean",
    "edistance",
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
    assert no_change["mse_mean"] > 0.1 and no_change["mmd"] > 0.05
    assert no_change["knn_auc"] > 0.8
    assert no_change["de_overlap_top20"] < 1.0


def test_population_metrics_uses_the_given_pca(populations):
    control, real, _ = populations
    pca = fit_pca(real, n_components=2)
    pred = real[::-1] + 0.2
    m = population_metrics(pred, real, control, pca=pca)
    assert m["edistance"] == pytest.approx(energy_distance(project(pred, pca), project(real, pca)))


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
    # a space fitted on the real and control cells: the new sample looks farther off than
    # the shifted one does in the pooled space
    real_space = fit_pca(np.vstack([real, control]), n_components=50)
    biased = population_metrics(fresh, real, control, pca=real_space)
    assert biased["edistance"] > shifted["edistance"]
