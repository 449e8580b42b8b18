"""Cell fate: state classifier, compositions with intervals, predict_fate end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rnadiff import InputError, ModelConfig, NetworkConfig, PreprocessConfig, RNADiffusion
from rnadiff.datasets import simulate
from rnadiff.fate import (
    StateClassifier,
    adjusted_proportions,
    composition,
    composition_error,
    fate_table,
    fit_state_classifier,
    plot_fate,
    predict_fate,
)


@pytest.fixture(scope="module")
def sim():
    return simulate(
        2400, seed=1, n_genes=120, n_cell_types=1, n_genetic=0, n_drugs=2, n_combinations=0,
        times=(0.0, 48.0), doses=(10.0,), state_scale=1.2,
    )  # fmt: skip


def test_composition_counts_and_interval():
    labels = ["a"] * 60 + ["b"] * 30 + ["c"] * 10
    table = composition(labels, ["a", "b", "c", "d"], n_boot=300, seed=0)
    assert table["proportion"].to_dict() == {"a": 0.6, "b": 0.3, "c": 0.1, "d": 0.0}
    assert table["n_cells"].sum() == 100
    assert (table["low"] <= table["proportion"]).all() and (
        table["proportion"] <= table["high"]
    ).all()
    # the interval of a share p from n cells is about +-2 sqrt(p(1-p)/n)
    width = table.loc["a", "high"] - table.loc["a", "low"]
    assert 0.6 * 4 * np.sqrt(0.24 / 100) < width < 1.6 * 4 * np.sqrt(0.24 / 100)
    assert table.loc["d", "high"] == 0.0
    assert composition(labels, n_boot=0)["low"].isna().all()
    with pytest.raises(InputError, match="no cells"):
        composition([])


def test_adjusted_proportions_invert_the_confusion():
    c = np.array([[0.8, 0.15, 0.05], [0.2, 0.7, 0.1], [0.0, 0.3, 0.7]])
    p = np.array([0.1, 0.3, 0.6])
    assert np.allclose(adjusted_proportions(c.T @ p, c), p, atol=1e-4)
    q = np.array([0.2, 0.5, 0.3])
    assert np.allclose(adjusted_proportions(q, np.eye(3)), q, atol=1e-4)  # perfect classifier
    both = adjusted_proportions(np.stack([c.T @ p, q]), c)
    assert both.shape == (2, 3) and np.allclose(both.sum(1), 1) and (both >= 0).all()
    # fractions no composition explains: the best one on the simplex (grid search)
    far = np.array([0.05, 0.2, 0.75])
    got = adjusted_proportions(far, c)
    grid = [
        np.array([a, b, 1 - a - b]) for a in np.linspace(0, 1, 101) for b in np.linspace(0, 1, 101)
    ]
    best = min(np.linalg.norm(c.T @ g - far) for g in grid if g[2] >= -1e-12)
    assert got.min() >= 0 and np.isclose(got.sum(), 1)
    assert np.linalg.norm(c.T @ got - far) <= best + 1e-6
    with pytest.raises(InputError, match="does not match"):
        adjusted_proportions(q, np.eye(2))
    with pytest.raises(InputError, match="missing values"):
        adjusted_proportions(q, np.full((3, 3), np.nan))


def test_adjusted_composition_corrects_a_confused_classifier():
    """Cells of a known composition assigned through a confused classifier: counting is
    biased towards the confused states, the adjusted composition recovers the truth."""
    rng = np.random.default_rng(0)
    states = ["a", "b", "c"]
    c = pd.DataFrame(
        [[0.8, 0.15, 0.05], [0.2, 0.7, 0.1], [0.0, 0.3, 0.7]], index=states, columns=states
    )
    truth = np.array([0.1, 0.3, 0.6])
    true = rng.choice(3, size=20000, p=truth)
    assigned = np.array([rng.choice(3, p=c.to_numpy()[t]) for t in true])
    labels = np.asarray(states)[assigned]
    raw = composition(labels, states, n_boot=0)
    adjusted = composition(labels, states, confusion=c, n_boot=100, seed=0)
    assert composition_error(raw, pd.Series(truth, index=states)) > 0.1
    assert composition_error(adjusted, pd.Series(truth, index=states)) < 0.02
    assert (adjusted["low"] <= adjusted["proportion"] + 1e-9).all()
    assert (adjusted["proportion"] <= adjusted["high"] + 1e-9).all()
    assert adjusted["n_cells"].tolist() == raw["n_cells"].tolist()  # counts stay assigned
    # the confusion matrix's states are matched by name
    shuffled = c.loc[["c", "a", "b"], ["b", "c", "a"]]
    same = composition(labels, states, confusion=shuffled, n_boot=0)
    assert np.allclose(same["proportion"], adjusted["proportion"])
    with pytest.raises(InputError, match="covers states"):
        composition(labels, ["a", "b"], confusion=c)


def test_cross_validation_with_a_rare_state():
    """A state with fewer cells than cv_folds still gets a cross-validated confusion
    matrix (as many folds as it has cells)."""
    rng = np.random.default_rng(1)
    x = np.vstack([rng.normal(0, 1, (40, 5)), rng.normal(4, 1, (3, 5))])
    labels = ["common"] * 40 + ["rare"] * 3
    clf = StateClassifier(cv_folds=5, n_components=3).fit(x, labels)
    assert np.isfinite(clf.cv_accuracy_) and clf.confusion_.shape == (2, 2)
    single = StateClassifier(cv_folds=5, n_components=3).fit(x[:41], labels[:41])
    assert np.isnan(single.cv_accuracy_) and single.confusion_ is None


def test_composition_error_is_total_variation():
    p = pd.Series({"a": 0.5, "b": 0.5})
    q = pd.Series({"b": 0.25, "c": 0.75})
    assert composition_error(p, q) == pytest.approx(0.75)  # states aligned by name
    assert composition_error(p, p) == 0.0
    with pytest.raises(InputError, match="different states"):
        composition_error(np.ones(2) / 2, np.ones(3) / 3)


def test_classifier_learns_simulated_states(sim):
    adata, _ = sim
    x = np.log1p(adata.X.toarray() / adata.X.sum(1).A * 1e4)
    states = adata.obs["state"].astype(str).to_numpy()
    for method in ("logistic", "knn"):
        clf = StateClassifier(method=method, seed=0).fit(x, states)
        assert clf.states_ == sorted(set(states))
        assert clf.cv_accuracy_ > 0.7, method  # chance is 1/3
        assert np.allclose(np.diag(clf.confusion_.to_numpy()).mean(), clf.cv_accuracy_)
        proba = clf.predict_proba(x[:50])
        assert proba.shape == (50, len(clf.states_)) and np.allclose(proba.sum(1), 1)
    with pytest.raises(InputError, match="two states"):
        StateClassifier().fit(x[:20], ["a"] * 20)
    with pytest.raises(InputError, match="not fitted"):
        StateClassifier().predict(x)
    with pytest.raises(InputError, match="method"):
        StateClassifier(method="forest")


def test_predict_fate_end_to_end(sim, tmp_path):
    adata, truth = sim
    drug = sorted(set(adata.obs.perturbation) - {"control"})[0]
    RNADiffusion.setup_anndata(
        adata, perturbation_key="perturbation", control="control", dose_key="dose",
        continuous_keys=["time"],
    )  # fmt: skip
    config = ModelConfig(
        preprocess=PreprocessConfig(n_top_genes=120),
        network=NetworkConfig(width=64, depth=1, emb_dim=16),
    )
    model = RNADiffusion(adata, config=config, seed=0)
    model.train(max_steps=30, progress=False)
    source = adata[((adata.obs.perturbation == "control") & (adata.obs.time == 48)).to_numpy()]
    before = source.copy()
    clf = fit_state_classifier(model, adata, "state", seed=0)
    pred = predict_fate(
        model, source, reference=adata, state_key="state", classifier=clf,
        target={"perturbation": drug, "dose": 10.0}, n_boot=50, steps=4, progress=False,
    )  # fmt: skip
    assert pred.n_obs == source.n_obs
    assert set(pred.obs["rnadiff_state"].cat.categories) == set(clf.states_)
    assert pred.obs["rnadiff_state_probability"].between(0, 1).all()
    table = fate_table(pred)
    assert table["proportion"].sum() == pytest.approx(1.0)
    assert pred.uns["rnadiff_fate"]["cv_accuracy"] == clf.cv_accuracy_
    assert pred.uns["rnadiff_fate"]["params"]["state_key"] == "state"
    assert (source.obs.columns == before.obs.columns).all()  # the source is not modified
    # the same call gives the same states (seeded)
    again = predict_fate(
        model, source, reference=adata, state_key="state", classifier=clf,
        target={"perturbation": drug, "dose": 10.0}, n_boot=50, steps=4, progress=False,
    )  # fmt: skip
    assert (again.obs["rnadiff_state"] == pred.obs["rnadiff_state"]).all()
    # the composition is adjusted for the classifier's confusion by default; adjust=False
    # reports the counted fractions
    assert pred.uns["rnadiff_fate"]["params"]["adjusted"] is True
    counted = predict_fate(
        model, source, reference=adata, state_key="state", classifier=clf, adjust=False,
        target={"perturbation": drug, "dose": 10.0}, n_boot=0, steps=4, progress=False,
    )  # fmt: skip
    assert counted.uns["rnadiff_fate"]["params"]["adjusted"] is False
    labels = counted.obs["rnadiff_state"].astype(str)
    share = labels.value_counts(normalize=True).reindex(clf.states_, fill_value=0.0)
    assert np.allclose(fate_table(counted)["proportion"], share)
    expected = composition(labels, clf.states_, confusion=clf.confusion_, n_boot=0)
    assert np.allclose(table["proportion"], expected["proportion"])
    pred.write_h5ad(tmp_path / "fate.h5ad")  # the record writes
    generated = predict_fate(
        model, source, reference=adata, state_key="state", classifier_method="knn",
        target={"perturbation": drug, "dose": 10.0}, method="generate", n_boot=0, steps=4,
        progress=False,
    )  # fmt: skip
    assert generated.uns["rnadiff_fate"]["params"]["classifier"] == "knn"
    assert generated.n_obs == source.n_obs
    real = truth.composition("celltype_0", drug, time=48.0, dose=10.0)
    assert len(real) == len(clf.states_)
    plot_fate({"predicted": table}, tmp_path / "fate.png", title=drug)
    assert (tmp_path / "fate.png").stat().st_size > 1000
    with pytest.raises(InputError, match="state_key"):
        predict_fate(model, source, reference=adata, state_key="nope", perturbation=drug)
