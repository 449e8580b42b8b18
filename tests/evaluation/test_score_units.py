"""Scoring puts every population in one unit: the same cells as counts, log counts per 10,000
or log counts per million score the same (``rnadiff.evaluation._score``)."""

import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from rnadiff.evaluation._score import score, score_conditions


def _log_at(adata: ad.AnnData, target_sum: float, base: float = np.e, uns=None) -> ad.AnnData:
    """``adata``'s counts as ``log_base(1 + x)`` of counts per ``target_sum`` per cell."""
    counts = np.asarray(adata.X.toarray(), dtype=np.float64)
    x = np.log1p(counts / counts.sum(axis=1, keepdims=True) * target_sum) / np.log(base)
    out = ad.AnnData(X=sp.csr_matrix(x.astype(np.float32)), obs=adata.obs.copy())
    out.var_names = adata.var_names
    out.uns.update(uns or {})
    return out


@pytest.fixture
def kang(kang_small):
    stim = kang_small[(kang_small.obs.group_id == "stim").to_numpy()].copy()
    ctrl = kang_small[(kang_small.obs.group_id == "ctrl").to_numpy()].copy()
    # a prediction: the control cells shifted half-way to the stimulated cells' mean
    x = _log_at(ctrl, 1e4).X.toarray()
    x = x + 0.5 * (_log_at(stim, 1e4).X.toarray().mean(0) - x.mean(0))
    pred = ad.AnnData(X=np.clip(x, 0, None).astype(np.float32), obs=ctrl.obs.copy())
    pred.var_names = ctrl.var_names
    pred.uns["log1p"] = {"base": None}  # a shifted profile is no normalization: say it
    return pred, stim, ctrl


def _warnings(caplog) -> str:
    return " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def test_real_and_control_cells_of_another_scale_are_rescaled(kang, caplog):
    pred, stim, ctrl = kang
    expected = score(pred, stim, ctrl, distributional=False)  # counts: per 10,000
    with caplog.at_level(logging.WARNING, logger="rnadiff"):
        got = score(pred, _log_at(stim, 1e6, 2), _log_at(ctrl, 1e6), distributional=False)
    pd.testing.assert_series_equal(got, expected, rtol=1e-4, atol=1e-5)
    said = _warnings(caplog)
    assert "the real cells' log values are of about 1e+06" in said
    assert "the control cells' log values are of about 1e+06" in said


def test_predictions_of_another_scale_are_rescaled_to_the_real_cells(kang, caplog):
    pred, stim, ctrl = kang
    expected = score(pred, stim, ctrl, distributional=False)
    linear = np.expm1(pred.X.astype(np.float64))
    at_1e6 = ad.AnnData(X=np.log1p(100 * linear).astype(np.float32), obs=pred.obs.copy())
    at_1e6.var_names = pred.var_names
    at_1e6.uns["log1p"] = {"base": None}
    with caplog.at_level(logging.WARNING, logger="rnadiff"):
        got = score(at_1e6, stim, ctrl, distributional=False)  # found from the real cells
    # estimated from the genes' means against the real cells' (this prediction's own errors
    # move it by ~1%), so close to the 100 it is
    pd.testing.assert_series_equal(got, expected, rtol=0.05, atol=0.03)
    assert "the predicted cells' expression is about 10" in _warnings(caplog)
    caplog.clear()
    at_1e6.uns["rnadiff"] = {"scale": 1e6}  # rnadiff's outputs say their scale
    with caplog.at_level(logging.WARNING, logger="rnadiff"):
        got = score(at_1e6, stim, ctrl, distributional=False)
    pd.testing.assert_series_equal(got, expected, rtol=1e-4, atol=1e-5)
    assert "(uns['rnadiff']['scale'])" in _warnings(caplog)


def test_scales_within_the_tolerance_are_left_alone(kang, caplog):
    pred, stim, ctrl = kang
    expected = score(pred, stim, ctrl, distributional=False)
    with caplog.at_level(logging.WARNING, logger="rnadiff"):
        got = score(pred, _log_at(stim, 1.2e4), _log_at(ctrl, 1.2e4), distributional=False)
    assert not _warnings(caplog)
    assert got["r2_mean_all"] != pytest.approx(expected["r2_mean_all"], abs=1e-6)


def test_conditions_are_scored_in_one_unit_too(kang, caplog):
    pred, stim, ctrl = kang
    pred.obs["condition"] = "stim"
    stim.obs["condition"] = "stim"
    expected = score_conditions(pred, stim, ctrl, by="condition", distributional=False)
    real = _log_at(stim, 1e6)
    real.obs["condition"] = "stim"
    with caplog.at_level(logging.WARNING, logger="rnadiff"):
        got = score_conditions(pred, real, _log_at(ctrl, 1e6), by="condition", distributional=False)
    pd.testing.assert_frame_equal(got, expected, rtol=1e-4, atol=1e-5)
    assert "rescaled" in _warnings(caplog)


def test_the_same_cells_as_real_and_control_are_warned_about(kang, caplog):
    pred, stim, ctrl = kang
    with caplog.at_level(logging.WARNING, logger="rnadiff"):
        got = score(pred, ctrl, ctrl, distributional=False)
    assert np.isnan(got["pearson_delta_all"])
    assert "have the control cells' mean expression" in _warnings(caplog)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rnadiff"):
        score(pred, stim, ctrl, distributional=False)
    assert not _warnings(caplog)


def test_real_and_control_of_near_scales_take_one_factor(kang, caplog):
    """Two populations of one unit whose medians differ a little (per-cell size factors) are
    moved by the same factor: the change between them is not altered."""
    pred, stim, ctrl = kang
    # both by 1e4 / 1.1e6: the real cells to 1e4, the control cells to 1e4 / 1.1
    expected = score(pred, _log_at(stim, 1e4), _log_at(ctrl, 1e4 / 1.1), distributional=False)
    with caplog.at_level(logging.WARNING, logger="rnadiff"):
        got = score(pred, _log_at(stim, 1.1e6), _log_at(ctrl, 1e6), distributional=False)
    pd.testing.assert_series_equal(got, expected, rtol=1e-4, atol=1e-5)
    assert "the control cells' log values are of about 1.1e+06" in _warnings(caplog)
