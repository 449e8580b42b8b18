"""Cell fate: state classifier, compositions with intervals, predict_fate end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rnadiff import InputError, ModelConfig, NetworkConfig, PreprocessConfig, RNADiffusion
from rnadiff.datasets import simulate
from rnadiff.fate import (
    StateClassifier,
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
