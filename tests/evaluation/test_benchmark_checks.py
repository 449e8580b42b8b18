"""Checks of the benchmark's scoring that were one-off scripts: the PCA space of the population
distances, ``rnadiff evaluate --by`` against the benchmark's own scores, and (when its venv is
installed) rnadiff's metrics against Arc Institute's cell-eval."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from rnadiff.data import _splits as splits
from rnadiff.evaluation._benchmark import BenchConfig, baseline_predictions, prepare, score_split
from rnadiff.evaluation._metrics import population_metrics, response_metrics

ROOT = Path(__file__).resolve().parents[2]
CELLEVAL = ROOT / ".peers" / "celleval" / "bin" / "python"


def test_a_perfect_prediction_scores_near_zero_in_the_benchmarks_space(kang_per_group):
    """Half of the real cells predicting the other half (a perfect prediction up to sampling)
    must score far better than the additive baseline: E-distance near 0 in the pooled space
    the benchmark fits its principal axes in (axes fitted on the real and control cells made
    cells that were in the fit look far from new cells of the same population)."""
    data = kang_per_group(60)
    split = next(s for s in splits.kang_loo_celltype(data) if s.fold == "CD14+ Monocytes")
    prep = prepare(split, BenchConfig())
    (ev,) = split.evaluations
    real = prep.evaluations[ev.name]["real"]
    order = np.random.default_rng(0).permutation(len(real))
    half = len(order) // 2
    target, perfect = real[order[:half]], real[order[half:]]
    additive = baseline_predictions(split, prep)[ev.name]["baseline: additive"]
    control = prep.evaluations[ev.name]["control"]
    e_perfect = population_metrics(perfect, target, control, seed=0)["edistance"]
    e_additive = population_metrics(additive, target, control, seed=0)["edistance"]
    assert abs(e_perfect) < 0.2 * e_additive, (e_perfect, e_additive)


def test_evaluate_by_gives_the_benchmarks_per_knock_out_scores(kang_small, tmp_path):
    """``rnadiff evaluate --by`` on a screen's predictions gives the benchmark's scores of
    each knock-out (``score_split``) to float precision."""
    adata = kang_small.copy()
    key, control = "top_grna_target", "non-targeting"
    labels = adata.obs["cluster_id"].astype(str).str.replace(" ", "_").str.replace("+", "")
    labels = labels.where(labels != "CD14_Monocytes", control)
    adata.obs[key] = pd.Categorical(labels)
    adata.obs["bio_rep"] = pd.Categorical(np.where(np.arange(adata.n_obs) % 2, "r1", "r2"))
    adata.obs["top_grna_frac"] = 1.0
    (split,) = splits.papalexi_seen(adata, seed=0)
    config = BenchConfig(distributional=True)
    prep = prepare(split, config)
    # stand-in predictions: each knock-out's held-out cells with noise (no model needed)
    rng = np.random.default_rng(1)
    preds = {
        ev.name: {
            "m": np.clip(
                prep.evaluations[ev.name]["real"]
                + rng.normal(0, 0.2, size=prep.evaluations[ev.name]["real"].shape),
                0,
                None,
            )
        }
        for ev in split.evaluations
    }
    bench = score_split(split, prep, preds, config)
    bench = bench.pivot_table(index="evaluation", columns="metric", values="value")
    parts = []
    for ev in split.evaluations:
        x = preds[ev.name]["m"].astype(np.float32)
        obs = pd.DataFrame(
            {key: [ev.name] * len(x)}, index=[f"{ev.name}_{i}" for i in range(len(x))]
        )
        parts.append(ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=prep.genes)))
    pred = ad.concat(parts)
    pred.uns["log1p"] = {"base": None}
    real = ad.concat([ev.real for ev in split.evaluations] + [split.evaluations[0].control])
    for a in (pred, real):
        a.obs[key] = pd.Categorical(a.obs[key].astype(str))
    pred.write_h5ad(tmp_path / "pred.h5ad")
    real.write_h5ad(tmp_path / "real.h5ad")
    cmd = [sys.executable, "-m", "rnadiff.cli", "evaluate", "--pred", tmp_path / "pred.h5ad"]
    cmd += ["--real", tmp_path / "real.h5ad", "--by", key, "--threads", "1"]
    cmd += ["--control-where", f"{key}={control}", "--out", tmp_path / "per_ko.csv"]
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    cli = pd.read_csv(tmp_path / "per_ko.csv", index_col=0)
    for metric in ("pearson_delta_top100", "r2_mean_top100", "edistance", "mse_mean"):
        np.testing.assert_allclose(
            cli.loc[bench.index, metric], bench[metric], rtol=1e-4, atol=1e-5, err_msg=metric
        )


@pytest.mark.skipif(not CELLEVAL.exists(), reason="cell-eval venv not installed (make peers)")
def test_metrics_agree_with_cell_eval(kang_per_group, tmp_path):
    """rnadiff's Pearson delta (all genes) and MSE of the means against cell-eval's, computed
    by cell-eval itself in its own venv on the same arrays."""
    data = kang_per_group(60)
    split = next(s for s in splits.kang_loo_celltype(data) if s.fold == "B cells")
    prep = prepare(split, BenchConfig())
    (ev,) = split.evaluations
    pops = prep.evaluations[ev.name]
    pred = baseline_predictions(split, prep)[ev.name]["baseline: additive"]
    ours = response_metrics(pred, pops["real"], pops["control"], distributional=False)
    for name, x in (("pred", pred), ("real", pops["real"]), ("control", pops["control"])):
        np.save(tmp_path / f"{name}.npy", np.asarray(x, dtype=np.float32))
    script = ROOT / "benchmarks" / "peers" / "celleval_score.py"
    if not script.exists():
        pytest.skip("benchmarks/peers/celleval_score.py is missing")
    proc = subprocess.run(
        [str(CELLEVAL), str(script), "--arrays", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0 and "--arrays" in proc.stderr:
        pytest.skip("celleval_score.py does not take --arrays")
    assert proc.returncode == 0, proc.stderr
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    assert ours["pearson_delta_all"] == pytest.approx(theirs["pearson_delta"], abs=1e-4)


@pytest.mark.skipif(not CELLEVAL.exists(), reason="cell-eval venv not installed (make peers)")
def test_celleval_bundle_scores_every_method_against_the_cell_mean_baseline(
    kang_per_group, tmp_path
):
    """The harness's cell-eval step (``run.py --celleval``): every method of a split scored by
    cell-eval in its venv, its cell-mean baseline built from the training cells, and the
    scaled scores (the baseline's own are 0, a method equal to it scores as it does)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _peers import celleval_bundle, run_celleval

    data = kang_per_group(60)
    split = next(s for s in splits.kang_loo_celltype(data) if s.fold == "B cells")
    prep = prepare(split, BenchConfig())
    (ev,) = split.evaluations
    preds = baseline_predictions(split, prep)
    keep = ("baseline: additive", "baseline: control")
    preds = {ev.name: {m: x for m, x in preds[ev.name].items() if m in keep}}
    celleval_bundle(tmp_path / "b.npz", split, prep, preds)
    run_celleval([tmp_path / "b.npz"], tmp_path / "rows.csv")
    rows = pd.read_csv(tmp_path / "rows.csv").set_index(["method", "metric"])["value"]
    assert set(rows.index.get_level_values(0)) == {*keep, "baseline: cell mean (cell-eval)"}
    pops = prep.evaluations[ev.name]
    ours = response_metrics(
        preds[ev.name]["baseline: additive"], pops["real"], pops["control"], distributional=False
    )
    pd_theirs = rows["baseline: additive", "pearson_delta"]
    assert ours["pearson_delta_all"] == pytest.approx(pd_theirs, abs=1e-4)
    assert rows["baseline: cell mean (cell-eval)", "mae_scaled"] == pytest.approx(0.0)
    assert rows["baseline: control", "overlap_at_N"] == pytest.approx(0.0)  # no change, no DE
    # one perturbation: the discrimination score is trivially 1 and its scaled score undefined
    assert np.isnan(rows["baseline: additive", "discrimination_score_l1_scaled"])


def test_update_keeps_other_tasks_and_the_seeds_not_run_again():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import kept_rows

    old = pd.DataFrame(
        {
            "task": ["a", "a", "a", "b", "a"],
            "seed": [0, 1, 2, 0, 0],
            "method": ["m", "m", "m", "m", "rnadiff: design"],
        }
    )
    kept = kept_rows(old, {"a"}, range(1, 3))  # task a re-run at seeds 1 and 2
    assert kept.index.tolist() == [0, 3, 4]
    kept = kept_rows(old, {"a"}, range(0, 1), keep_methods={"rnadiff: design"})
    assert kept.index.tolist() == [1, 2, 3, 4]
