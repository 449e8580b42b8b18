"""Scoring predictions of many conditions at once (``score_conditions``, ``evaluate --by``)."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from rnadiff._errors import InputError
from rnadiff.data._preprocessing import detect_input_type, log_normalized_matrix
from rnadiff.evaluation import _score as score_module
from rnadiff.evaluation._metrics import discrimination_score
from rnadiff.evaluation._score import score_conditions


def _log_copy(adata: ad.AnnData, labels) -> ad.AnnData:
    """Log-normalized copy of ``adata`` with ``obs['condition'] = labels``."""
    x = log_normalized_matrix(adata.X, detect_input_type(adata.X), 1e4)
    obs = pd.DataFrame({"condition": pd.Categorical(labels)}, index=adata.obs_names.copy())
    return ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=adata.var_names.copy()))


@pytest.fixture
def perturbed(kang_small):
    """Kang as a screen: every stimulated cell type is a "perturbation", the control cells
    are labelled NT (one label, found automatically)."""
    stim = (kang_small.obs.group_id == "stim").to_numpy()
    labels = np.where(stim, kang_small.obs.cluster_id.astype(str), "NT")
    adata = kang_small.copy()
    adata.obs["condition"] = pd.Categorical(labels)
    return adata, adata[~stim].copy(), adata[stim].copy()


def test_real_cells_predict_themselves_perfectly(perturbed):
    adata, control, stim = perturbed
    pred = _log_copy(stim, stim.obs.condition.astype(str))
    # the whole data set as the real cells: the control label NT is no condition
    table = score_conditions(pred, adata, control, by="condition", distributional=False)
    assert sorted(table.index) == sorted(set(stim.obs.condition.astype(str)))
    assert (table.n_pred == table.n_real).all()
    assert np.allclose(table.r2_mean_all, 1.0) and np.allclose(table.pearson_delta_top100, 1.0)
    assert (table.discrimination == 1.0).all() and (table.discrimination_all_genes == 1.0).all()
    # the same labels with the predictions shifted by one cell type: they point elsewhere
    names = list(table.index)
    wrong = stim.obs.condition.astype(str).map(
        {n: names[(i + 1) % len(names)] for i, n in enumerate(names)}
    )
    shuffled = score_conditions(
        _log_copy(stim, wrong), adata, control, by="condition", distributional=False
    )
    assert shuffled.discrimination.mean() < 0.5
    assert (shuffled.r2_mean_all < 1.0).all()


def test_predicted_control_cells_are_skipped(perturbed):
    adata, control, _stim = perturbed
    # cell-eval's layout: the predicted file also holds control cells
    pred = _log_copy(adata, adata.obs.condition.astype(str))
    table = score_conditions(pred, adata, control, by="condition", distributional=False)
    assert "NT" not in table.index and len(table) == 5
    # with an explicit control label that is not the control's, NT becomes a condition
    with_nt = score_conditions(
        pred, adata, control, by="condition", distributional=False, control_label="none"
    )
    assert "NT" in with_nt.index and len(with_nt) == 6


def test_target_genes_are_left_out_of_their_own_comparison(perturbed, monkeypatch):
    adata, control, stim = perturbed
    g0, g1 = adata.var_names[:2]
    rename = {"B cells": g0, "CD4 T cells": f"{g0}+{g1}"}
    for a in (adata, stim):
        a.obs["condition"] = pd.Categorical(a.obs.condition.astype(str).replace(rename))
    calls = []

    def spy(pred, real, control, **kw):
        calls.append(kw.get("exclude"))
        return discrimination_score(pred, real, control, **kw)

    monkeypatch.setattr(score_module, "discrimination_score", spy)
    pred = _log_copy(stim, stim.obs.condition.astype(str))
    table = score_conditions(pred, adata, control, by="condition", distributional=False)
    genes = list(pred.var_names)
    excluded, everything = calls
    assert everything is None
    assert excluded[g0] == [genes.index(g0)]
    assert excluded[f"{g0}+{g1}"] == [genes.index(g0), genes.index(g1)]
    # other labels lose the genes among their parts: "CD14+ Monocytes" splits into a gene
    for k, v in excluded.items():
        assert v == [genes.index(p) for p in k.split("+") if p in genes]
    assert excluded["CD14+ Monocytes"] == ([genes.index("CD14")] if "CD14" in genes else [])
    assert {"discrimination", "discrimination_all_genes"} <= set(table.columns)


def test_bad_conditions_are_clear_errors(perturbed):
    adata, control, stim = perturbed
    pred = _log_copy(stim, stim.obs.condition.astype(str))
    with pytest.raises(InputError, match="'perturbation' not in the predicted"):
        score_conditions(pred, adata, control, by="perturbation")
    unknown = _log_copy(stim, ["KO_X"] * stim.n_obs)
    with pytest.raises(InputError, match=r"without real cells.*KO_X"):
        score_conditions(unknown, adata, control, by="condition")
    only_control = _log_copy(control, ["NT"] * control.n_obs)
    with pytest.raises(InputError, match="no condition"):
        score_conditions(only_control, adata, control, by="condition")
    gaps = pred.copy()
    gaps.obs["condition"] = gaps.obs.condition.astype(object)
    gaps.obs.iloc[0, 0] = None
    with pytest.raises(InputError, match="1 empty values"):
        score_conditions(gaps, adata, control, by="condition")


def test_one_real_condition_has_no_discrimination(perturbed):
    _adata, control, stim = perturbed
    one = stim[(stim.obs.condition == "B cells").to_numpy()]
    pred = _log_copy(one, ["B cells"] * one.n_obs)
    table = score_conditions(pred, one, control, by="condition", distributional=False)
    assert list(table.index) == ["B cells"] and "discrimination" not in table
