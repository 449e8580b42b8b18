"""Properties of the perturbation simulator (rnadiff.data._simulate) and its ground truth."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.stats import pearsonr

from rnadiff._errors import InputError
from rnadiff.data._simulate import SimulationConfig, simulate
from rnadiff.data._simulate_drugs import DRUG_LIBRARY, morgan_fingerprint, tanimoto
from rnadiff.data._simulate_model import hill

SMALL = {"n_cells": 3000, "n_genes": 200, "n_programs": 10, "n_genetic": 4, "n_drugs": 5}
CT = "celltype_0"


@pytest.fixture(scope="module")
def sim():
    return simulate(seed=3, **SMALL)


@pytest.fixture(scope="module")
def truth(sim):
    return sim[1]


def _single(truth, kind: str) -> str:
    table = truth.conditions
    return table.loc[table["perturbation_type"] == kind, "perturbation"].iloc[0]


def test_same_seed_same_output_other_seed_differs(sim):
    adata, truth = sim
    again, truth_again = simulate(seed=3, **SMALL)
    assert (adata.X != again.X).nnz == 0
    pd.testing.assert_frame_equal(adata.obs, again.obs)
    pd.testing.assert_frame_equal(truth.means, truth_again.means)
    other, _ = simulate(seed=4, **SMALL)
    assert other.shape == adata.shape and (adata.X != other.X).nnz > 0


def test_obs_columns_dtypes_and_counts(sim):
    adata, truth = sim
    obs = adata.obs
    for column in ("cell_type", "perturbation", "state", "smiles", "perturbation_type"):
        assert isinstance(obs[column].dtype, pd.CategoricalDtype), column
    assert obs["dose"].dtype == np.float64 and obs["time"].dtype == np.float64
    assert set(obs["perturbation_type"]) == {"control", "genetic", "chemical", "combination"}
    assert set(obs["state"]) <= set(SimulationConfig().states)
    not_drug = obs["perturbation_type"].isin(["control", "genetic"])
    assert (obs.loc[obs["perturbation"] == "control", "dose"] == 0).all()
    assert (obs.loc[not_drug, "smiles"] == "").all()
    chemical = obs[obs["perturbation_type"] == "chemical"]
    assert (chemical["dose"] > 0).all()
    assert (chemical["smiles"].astype(str) == chemical["perturbation"].map(DRUG_LIBRARY)).all()
    combos = obs.loc[obs["perturbation_type"] == "combination", "perturbation"].astype(str)
    assert combos.str.count(r"\+").eq(1).all()
    assert set(obs["condition"]) == set(truth.conditions.index)
    assert np.array_equal(obs["condition"].value_counts()[truth.conditions.index],
                          truth.conditions["n_cells"])  # fmt: skip
    assert sp.isspmatrix_csr(adata.X) and adata.n_obs == SMALL["n_cells"]
    assert np.array_equal(adata.X.data, np.round(adata.X.data)) and adata.X.data.min() > 0


@pytest.mark.parametrize("median", [2000.0, 5000.0])
def test_library_size_median_near_parameter(median):
    adata, _ = simulate(2000, n_genes=150, library_median=median, seed=0)
    observed = np.median(np.asarray(adata.X.sum(axis=1)).ravel())
    assert abs(observed / median - 1) < 0.08


def test_hill_closed_form():
    doses = np.logspace(-3, 3, 50)
    values = np.array([hill(d, 0.7, 1.8) for d in doses])
    assert np.all(np.diff(values) > 0) and hill(0.0, 0.7, 1.8) == 0.0
    assert hill(0.7, 0.7, 1.8) == pytest.approx(0.5)
    assert hill(0.7 * 3.0, 0.7, 1.0) == pytest.approx(0.75)


def test_drug_response_follows_hill_in_dose_and_builds_up_in_time(truth):
    drug = _single(truth, "chemical")
    ec50, n, tau = truth.drugs.loc[drug, ["ec50", "hill", "tau"]]
    control = truth.activity(CT, "control", time=24.0).to_numpy()

    def shift(dose, time=24.0):
        return truth.activity(CT, drug, dose=dose, time=time).to_numpy() - control

    full = shift(1e9)
    assert np.allclose(shift(ec50), 0.5 * full)
    sizes = [np.abs(shift(d)).sum() for d in np.logspace(-3, 3, 12)]
    assert np.all(np.diff(sizes) > 0)
    for d in (0.1 * ec50, 3.0 * ec50):
        assert np.allclose(shift(d), hill(d, ec50, n) * full)
    late = truth.activity(CT, drug, dose=1e9, time=1e6).to_numpy() - control
    assert np.allclose(full, (1 - np.exp(-24.0 / tau)) * late)
    assert np.allclose(shift(ec50, time=0.0), 0.0)
    pd.testing.assert_series_equal(  # vehicle (dose 0) is the control
        truth.mean(CT, drug, dose=0.0, time=24.0), truth.mean(CT, "control", time=24.0)
    )


def test_knockout_target_drops(sim):
    adata, truth = sim
    for gene in truth.knockouts.index:
        for state in truth.config.states:
            ko = truth.mean(CT, gene, time=72.0, state=state)[gene]
            control = truth.mean(CT, "control", time=72.0, state=state)[gene]
            assert ko < 0.5 * control
        assert (
            truth.mean(CT, gene, time=72.0)[gene] < 0.5 * truth.mean(CT, "control", time=72.0)[gene]
        )
    # the cells agree: the target's share of UMIs falls in the knocked-out cells
    x = adata.X.multiply(1.0 / adata.X.sum(axis=1)).tocsr()
    for gene in truth.knockouts.index:
        column = adata.var_names.get_loc(gene)
        ko = x[(adata.obs["perturbation"] == gene).to_numpy(), column].mean()
        control = x[(adata.obs["perturbation"] == "control").to_numpy(), column].mean()
        assert ko < 0.7 * control


def _combo(truth) -> tuple[str, str, str]:
    combo = truth.interactions.index[0]
    return combo, *combo.split("+")


def test_combination_without_interaction_adds_in_program_and_log_rate_space(truth):
    combo, a, b = _combo(truth)
    for method in (truth.activity, truth.log_rates):
        for dose, time in [(0.5, 24.0), (3.0, 72.0)]:
            kw = {"dose": dose, "time": time}
            control = method(CT, "control", **kw)
            additive = method(CT, a, **kw) + method(CT, b, **kw) - control
            assert np.allclose(method(CT, combo, **kw), additive, atol=1e-10)
    assert np.allclose(truth.interactions, 0.0)


def test_interaction_adds_a_pair_specific_term():
    kw = dict(SMALL, n_cells=300)
    _, truth = simulate(seed=3, interaction=0.5, **kw)
    combo, a, b = _combo(truth)
    assert np.allclose(truth.interactions.loc[combo], truth.interaction(a, b))
    assert np.allclose(truth.interaction(a, b), truth.interaction(b, a))
    assert np.abs(truth.interaction(a, b)).max() > 0.1
    cond = {"dose": 1e9, "time": 1e6}  # both perturbations saturated: A_a = A_b = 1
    control = truth.activity(CT, "control", **cond)
    additive = truth.activity(CT, a, **cond) + truth.activity(CT, b, **cond) - control
    excess = (truth.activity(CT, combo, **cond) - additive).to_numpy()
    responsiveness = truth.model.responsiveness[0]
    assert np.allclose(excess, responsiveness * truth.interaction(a, b))
    eta = {p: truth.log_rates(CT, p, **cond) for p in ("control", a, b, combo)}
    assert not np.allclose(eta[combo], eta[a] + eta[b] - eta["control"], atol=1e-3)


def test_similar_smiles_give_similar_effects():
    _, truth = simulate(200, seed=0)  # default genes and programs: the effect's dimensions
    effects = truth.drug_effects.to_numpy()
    unit = effects / np.linalg.norm(effects, axis=1, keepdims=True)
    fps = [morgan_fingerprint(s) for s in truth.drugs["smiles"]]
    pairs = list(itertools.combinations(range(len(fps)), 2))
    similarity = np.array([tanimoto(fps[i], fps[j]) for i, j in pairs])
    cosine = np.array([unit[i] @ unit[j] for i, j in pairs])
    assert pearsonr(similarity, cosine).statistic > 0.3
    assert cosine[similarity > 0.4].mean() > cosine[similarity < 0.15].mean() + 0.25
    steroids = [truth.drugs.index.get_loc(d) for d in ("Hydrocortisone", "Prednisolone")]
    assert unit[steroids[0]] @ unit[steroids[1]] > np.quantile(cosine, 0.9)


def test_composition_sums_to_one_and_moves_with_time_and_perturbation(truth):
    assert np.allclose(truth.compositions.sum(axis=1), 1.0)
    assert (truth.compositions.to_numpy() >= 0).all()
    early = truth.composition(CT, "control", time=6.0)
    late = truth.composition(CT, "control", time=72.0)
    assert np.abs(early - late).max() > 0.05
    moved = [
        np.abs(truth.composition(CT, p, time=72.0) - late).max() for p in truth.knockouts.index
    ]
    assert max(moved) > 0.05


def test_truth_tables_match_methods_and_cells(sim):
    adata, truth = sim
    key = f"{CT}|control|0|72"
    assert np.allclose(truth.means.loc[key], truth.mean(CT, "control", time=72.0))
    assert np.allclose(truth.log_means.loc[key], truth.mean(CT, "control", time=72.0, log=True))
    assert np.allclose(truth.compositions.loc[key], truth.composition(CT, "control", time=72.0))
    cells = (adata.obs["condition"] == key).to_numpy()
    x = adata.X[cells]
    empirical = np.asarray(x.multiply(1e4 / x.sum(axis=1)).mean(axis=0)).ravel()
    expressed = truth.means.loc[key].to_numpy() > 5
    assert (
        np.corrcoef(np.log1p(empirical[expressed]), truth.log_means.loc[key][expressed])[0, 1]
        > 0.97
    )


def test_held_out_drug_and_combination_have_a_truth(truth):
    held_out = truth.drugs.index[~truth.drugs["sampled"]][0]
    control = truth.mean(CT, "control", time=48.0)
    drugged = truth.mean(CT, held_out, dose=1e3, time=48.0)
    assert np.isclose(drugged.sum(), 1e4) and not np.allclose(drugged, control)
    gene = truth.knockouts.index[0]
    combo = truth.mean(CT, f"{held_out}+{gene}", dose=[2.0, 0.0], time=48.0)
    assert np.isclose(combo.sum(), 1e4)


def test_sample_draws_a_replicate_of_any_condition(sim):
    """Fresh cells of a condition: the data's distribution, not the data's cells; held-out
    conditions too; reproducible by seed."""
    adata, truth = sim
    key = f"{CT}|control|0|72"
    real = adata[(adata.obs["condition"] == key).to_numpy()]
    fresh = truth.sample(CT, "control", time=72.0, n_cells=real.n_obs, seed=0)
    assert fresh.shape == real.shape and list(fresh.var_names) == list(adata.var_names)
    assert sp.issparse(fresh.X) and np.all(fresh.X.data == np.round(fresh.X.data))
    assert (fresh.X != real.X).nnz > 0  # not the data's cells
    again = truth.sample(CT, "control", time=72.0, n_cells=real.n_obs, seed=0)
    other = truth.sample(CT, "control", time=72.0, n_cells=real.n_obs, seed=1)
    assert (again.X != fresh.X).nnz == 0 and (other.X != fresh.X).nnz > 0

    def log_mean(x):
        return np.log1p(np.asarray(x.multiply(1e4 / x.sum(axis=1)).mean(axis=0)).ravel())

    expressed = truth.means.loc[key].to_numpy() > 5
    r = np.corrcoef(log_mean(fresh.X)[expressed], log_mean(real.X)[expressed])[0, 1]
    assert r > 0.97  # the same condition
    lib = np.asarray(fresh.X.sum(axis=1)).ravel(), np.asarray(real.X.sum(axis=1)).ravel()
    assert 0.8 < np.median(lib[0]) / np.median(lib[1]) < 1.25
    held_out = truth.drugs.index[~truth.drugs["sampled"]][0]
    drugged = truth.sample(CT, held_out, time=72.0, dose=10.0, n_cells=400, seed=0)
    assert set(drugged.obs["state"]) <= set(truth.config.states)
    assert list(drugged.obs["perturbation"].unique()) == [held_out]
    with pytest.raises(InputError, match="n_cells"):
        truth.sample(CT, "control", time=72.0, n_cells=0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda t: t.mean(CT, "NotADrug", time=1.0), "unknown perturbation"),
        (lambda t: t.mean("celltype_9", "control", time=1.0), "unknown cell type"),
        (lambda t: t.mean(CT, "control", time=1.0, state="dead"), "unknown state"),
        (lambda t: simulate(10, drugs=("Aspirin", "Unobtainium")), "not in DRUG_LIBRARY"),
        (lambda t: simulate(10, combinations=("Aspirin+Aspirin",)), "repeats"),
        (lambda t: simulate(10, doses=()), "doses"),
        (lambda t: simulate(10, n_gene=5), "unknown simulate"),
    ],
)
def test_bad_input_is_an_input_error(truth, call, match):
    with pytest.raises(InputError, match=match):
        call(truth)
