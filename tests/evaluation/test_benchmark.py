"""The benchmark pieces on small slices of the real data: splits, baselines, scoring, summary."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from rnadiff.data import _splits as splits
from rnadiff.evaluation import _benchmark as benchmark
from rnadiff.evaluation._benchmark import (
    BenchConfig,
    baseline_predictions,
    load_predictions,
    paired_comparison,
    prepare,
    rnadiff_predictions,
    run_split,
    save_predictions,
    score_split,
    summarize,
    target_gene_indices,
    unpredictable,
)
from rnadiff.evaluation._metrics import discrimination_score

pytestmark = pytest.mark.usefixtures("one_thread")


def test_kang_splits_hold_out_exactly_one_stimulated_cell_type(kang_small):
    folds = list(splits.kang_loo_celltype(kang_small, seed=1))
    assert [f.fold for f in folds] == sorted(set(kang_small.obs.cluster_id))
    for split in folds:
        (ev,) = split.evaluations
        held = set(ev.real.obs_names)
        assert not held & set(split.train.obs_names)
        assert set(ev.real.obs.group_id) == {"stim"} and set(ev.real.obs.cluster_id) == {ev.name}
        assert set(ev.source.obs.group_id) == {"ctrl"}
        assert split.train.n_obs + ev.real.n_obs == kang_small.n_obs
        assert split.seed == 1


def _papalexi_like(kang_small):
    """Kang cells relabelled as knock-outs: enough to check the split logic."""
    adata = kang_small.copy()
    labels = np.where(adata.obs.group_id == "ctrl", "non-targeting", adata.obs.cluster_id)
    # "+" separates combinations, and a cell type is no gene: "CD14+ Monocytes" -> "CD14_Monocytes"
    labels = pd.Series(labels).str.replace("+", "").str.replace(" ", "_").to_numpy()
    adata.obs["top_grna_target"] = pd.Categorical(labels)
    adata.obs["bio_rep"] = pd.Categorical(["rep_1"] * adata.n_obs)
    adata.obs["top_grna_frac"] = 0.9
    return adata


def test_papalexi_seen_split_is_seeded_and_disjoint(kang_small):
    adata = _papalexi_like(kang_small)
    (a,) = splits.papalexi_seen(adata, seed=0)
    (b,) = splits.papalexi_seen(adata, seed=0)
    (c,) = splits.papalexi_seen(adata, seed=1)
    assert list(a.train.obs_names) == list(b.train.obs_names)
    assert list(a.train.obs_names) != list(c.train.obs_names)
    assert len(a.evaluations) == 5  # every knock-out
    for ev in a.evaluations:
        assert not set(ev.real.obs_names) & set(a.train.obs_names)
        assert not set(ev.source.obs_names) & set(a.train.obs_names)
        assert ev.name in set(a.train.obs.top_grna_target)  # seen in training


def test_papalexi_unseen_leaves_the_knock_out_out_entirely(kang_small):
    adata = _papalexi_like(kang_small)
    for split in splits.papalexi_unseen(adata, seed=0, n=2):
        (ev,) = split.evaluations
        assert ev.name not in set(split.train.obs.top_grna_target)


def test_baselines_on_a_kang_fold(kang_small):
    split = next(iter(splits.kang_loo_celltype(kang_small)))
    config = BenchConfig(n_top_genes=100)
    prep = prepare(split, config)
    (ev,) = split.evaluations
    preds = baseline_predictions(split, prep)[ev.name]
    assert set(preds) == {
        "baseline: control",
        "baseline: additive",
        "baseline: nearest-context additive",
        "baseline: nearest-context additive (correlation)",
        "baseline: linear (ridge)",
        "baseline: train mean",
    }
    src = prep.evaluations[ev.name]["source"]
    np.testing.assert_allclose(preds["baseline: control"], src)
    # the additive shift is the mean over the other cell types of their stim - ctrl change
    train, obs = prep.train, split.train.obs
    shifts = []
    for ct in sorted(set(obs.cluster_id) - {ev.name}):
        m = (obs.cluster_id == ct).to_numpy()
        stim, ctrl = (
            m & (obs.group_id == "stim").to_numpy(),
            m & (obs.group_id == "ctrl").to_numpy(),
        )
        shifts.append(train[stim].mean(0) - train[ctrl].mean(0))
    expected = np.clip(src + np.mean(shifts, axis=0), 0, None)
    np.testing.assert_allclose(preds["baseline: additive"], expected, rtol=1e-5, atol=1e-6)
    # every gene of the data is scored, modelled or not
    assert preds["baseline: train mean"].shape == (ev.real.n_obs, kang_small.n_vars)
    assert len(prep.state.genes) == 100 and prep.genes == list(kang_small.var_names)


def test_discrimination_leaves_each_knock_out_target_gene_out(kang_small, monkeypatch):
    adata = _papalexi_like(kang_small)
    # two "knock-outs" named after genes of the data, one of them a combination
    labels = adata.obs.top_grna_target.astype(str)
    g0, g1, g2 = adata.var_names[:3]
    labels = labels.replace({"B_cells": g0, "CD4_T_cells": f"{g1}+{g2}"})
    adata.obs["top_grna_target"] = pd.Categorical(labels)
    (split,) = splits.papalexi_seen(adata, seed=0)
    config = BenchConfig(n_top_genes=adata.n_vars)  # every gene, so the targets are kept
    prep = prepare(split, config)
    genes = list(prep.state.genes)
    idx = target_gene_indices(split, genes)
    assert {k: sorted(genes[i] for i in v) for k, v in idx.items()} == {
        g0: [g0],
        f"{g1}+{g2}": sorted([g1, g2]),
    }
    # score_split reports the score with these genes left out and the score over all genes
    calls = []

    def spy(pred, real, control, **kw):
        calls.append(kw.get("exclude"))
        return discrimination_score(pred, real, control, **kw)

    monkeypatch.setattr(benchmark, "discrimination_score", spy)
    preds = {ev.name: {"m": prep.evaluations[ev.name]["real"]} for ev in split.evaluations}
    rows = score_split(split, prep, preds, config)
    assert calls == [idx, None]
    for metric in ("discrimination", "discrimination_all_genes"):
        values = rows[rows.metric == metric].set_index("evaluation").value
        assert sorted(values.index) == sorted(ev.name for ev in split.evaluations)
        assert (values == 1.0).all()  # real cells single out themselves


def test_nearest_context_baseline_on_a_kang_fold(kang_small):
    split = next(iter(splits.kang_loo_celltype(kang_small)))
    prep = prepare(split, BenchConfig(n_top_genes=100))
    (ev,) = split.evaluations
    preds = baseline_predictions(split, prep)[ev.name]
    src, train, obs = prep.evaluations[ev.name]["source"], prep.train, split.train.obs
    state, cols = prep.state, prep.modelled

    def mean(ct, group):
        return train[((obs.cluster_id == ct) & (obs.group_id == group)).to_numpy()].mean(0)

    others = sorted(set(obs.cluster_id) - {ev.name})
    z = {ct: (mean(ct, "ctrl")[cols] - state.mean) / state.std for ct in [ev.name, *others]}
    # by hand: the other cell type whose scaled control mean is nearest in squared distance
    nearest = min(others, key=lambda ct: ((z[ct] - z[ev.name]) ** 2).sum())
    expected = np.clip(src + mean(nearest, "stim") - mean(nearest, "ctrl"), 0, None)
    got = preds["baseline: nearest-context additive"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, preds["baseline: additive"])
    corr = {
        ct: np.corrcoef(mean(ct, "ctrl")[cols], mean(ev.name, "ctrl")[cols])[0, 1] for ct in others
    }
    best = max(others, key=corr.get)
    expected = np.clip(src + mean(best, "stim") - mean(best, "ctrl"), 0, None)
    np.testing.assert_allclose(
        preds["baseline: nearest-context additive (correlation)"], expected, rtol=1e-5, atol=1e-6
    )


def test_nearest_context_of_a_measured_context_is_itself(kang_small):
    # Papalexi-like: replicates as contexts, every knock-out measured in every replicate
    adata = _papalexi_like(kang_small)
    rng = np.random.default_rng(0)
    adata.obs["bio_rep"] = pd.Categorical(rng.choice(["rep_1", "rep_2"], adata.n_obs))
    (split,) = splits.papalexi_seen(adata, seed=0)
    prep = prepare(split, BenchConfig(n_top_genes=100))
    ev = split.evaluations[0]
    preds = baseline_predictions(split, prep)[ev.name]
    src, train, obs = prep.evaluations[ev.name]["source"], prep.train, split.train.obs
    expected = np.empty_like(src)
    for rep in ("rep_1", "rep_2"):
        m = (obs.bio_rep == rep).to_numpy()
        shift = train[m & (obs.top_grna_target == ev.name).to_numpy()].mean(0) - train[
            m & (obs.top_grna_target == "non-targeting").to_numpy()
        ].mean(0)
        cells = (ev.source.obs.bio_rep == rep).to_numpy()
        expected[cells] = np.clip(src[cells] + shift, 0, None)
    for name in benchmark.NEAREST_CONTEXT.values():
        np.testing.assert_allclose(preds[name], expected, rtol=1e-5, atol=1e-6)
    # without context covariates there is no nearest-context baseline
    (plain,) = splits.kang9k_heldout(kang_small, seed=0)
    ev = plain.evaluations[0]
    preds = baseline_predictions(plain, prepare(plain, BenchConfig(n_top_genes=100)))[ev.name]
    assert "baseline: additive" in preds
    assert not set(benchmark.NEAREST_CONTEXT.values()) & set(preds)


def test_unseen_knock_out_is_reported_as_not_predictable(kang_small):
    adata = _papalexi_like(kang_small)
    split = next(iter(splits.papalexi_unseen(adata, seed=0, n=1)))
    prep = prepare(split, BenchConfig(n_top_genes=100))
    (ev,) = split.evaluations
    preds = baseline_predictions(split, prep)[ev.name]
    assert "baseline: additive" not in preds and "baseline: linear (ridge)" not in preds
    assert "baseline: train mean" in preds
    # rnadiff says it cannot, without training a model it could not use
    assert unpredictable(split) == [ev.name]
    out, timing, model = rnadiff_predictions(split, BenchConfig(max_steps=5))
    assert out == {} and model is None and "never seen in training" in timing["note"]
    kang_split = next(iter(splits.kang_loo_celltype(kang_small)))
    assert unpredictable(kang_split) == []


def test_run_split_scores_every_method_and_summarizes(kang_small):
    split = next(iter(splits.kang_loo_celltype(kang_small)))
    config = BenchConfig(max_steps=5, sampler_steps=3, n_top_genes=60)
    rows, times = run_split(split, config, log=lambda _: None)
    methods = set(rows.method)
    assert {"rnadiff (counterfactual)", "rnadiff (generation)", "baseline: additive"} <= methods
    for metric in ["pearson_delta_top100", "r2_mean_top20", "edistance", "mmd", "knn_auc"]:
        assert metric in set(rows.metric)
    assert times.loc[times.method == "rnadiff", "train_s"].iloc[0] > 0
    summary = summarize(rows)
    assert list(summary.columns) == ["task", "method", "metric", "mean", "sd", "n"]
    ours = summary[summary.method.str.startswith("rnadiff")]
    assert (ours.n == 1).all()  # one fold, one seed
    assert (summary.n <= 1).all()  # undefined values (the control's Pearson delta) are not counted


def test_time_course_split_and_interpolation_baseline():
    rng = np.random.default_rng(0)
    hours = np.repeat([0, 24, 48, 72], 30)
    base = rng.poisson(5, size=(120, 40)).astype(np.float32)
    base[:, 0] += hours / 4  # a gene rising with time
    adata = ad.AnnData(
        X=base,
        obs=pd.DataFrame(
            {"Hours": hours, "Media": np.where(hours == 0, "GM", "DM")},
            index=[f"c{i}" for i in range(120)],
        ),
        var=pd.DataFrame(index=[f"g{i}" for i in range(40)]),
    )
    (split,) = splits.hsmm_time(adata)
    (ev,) = split.evaluations
    assert 48 not in set(split.train.obs.Hours)
    assert set(ev.source.obs.Hours) == {24} and ev.condition == {"Hours": 48, "Media": "DM"}
    prep = prepare(split, BenchConfig(n_top_genes=40))
    preds = baseline_predictions(split, prep)[ev.name]
    assert "baseline: additive" in preds


def test_design_and_ranking_tasks_give_tidy_rows(kang_small):
    from rnadiff.evaluation import _design_tasks as design_tasks

    config = BenchConfig(max_steps=30, sampler_steps=3, n_top_genes=150)
    kang_split = next(iter(splits.kang_loo_celltype(kang_small)))
    rows, times = run_split(
        kang_split, config, extras=[design_tasks.kang_design_rows], log=lambda _: None
    )
    design = rows[rows.task == "kang_design"]
    assert set(design.method) == {
        "rnadiff design (markers)",
        "rnadiff unguided control",
        "real stimulated (reference)",
    }
    assert {"success_rate", "realism_ratio", "edistance", "pearson_delta"} <= set(design.metric)
    assert "rnadiff: kang_design_rows" in set(times.method)

    adata = _papalexi_like(kang_small)
    (split,) = splits.papalexi_seen(adata, seed=0)
    kos = tuple(sorted(set(adata.obs.top_grna_target) - {"non-targeting"}))

    def marker_rows(split, prep, model):
        return design_tasks.papalexi_marker_rows(split, prep, model, n_cells=20, expected=kos)

    def rank_rows(split, prep, model):
        return design_tasks.papalexi_rank_rows(split, prep, model, n_cells=20, n_noise_levels=2)

    rows, _ = run_split(split, config, extras=[rank_rows, marker_rows], log=lambda _: None)
    ranks = rows[(rows.task == "papalexi_rank") & (rows.metric == "rank")]
    assert set(ranks.evaluation) == set(kos)
    assert ranks.value.between(1, len(kos) + 1).all()
    # cell types differ strongly: the pseudobulk baseline finds every one of them
    base = ranks[ranks.method == "baseline: pseudobulk cosine"]
    assert (base.value == 1).all()
    random = rows[(rows.task == "papalexi_rank") & (rows.method == "baseline: random")]
    assert random[random.metric == "top1"].value.iloc[0] == pytest.approx(1 / 6)
    markers = rows[rows.task == "papalexi_marker_rank"]
    assert set(markers.evaluation) == set(kos) and {"rank", "top5"} == set(markers.metric)


def _tidy(values: dict[str, list[float]], metric: str, task: str = "t") -> pd.DataFrame:
    """Rows of ``folds.csv`` shape: one value per method and fold."""
    return pd.DataFrame(
        [
            {
                "task": task,
                "fold": f"f{i}",
                "seed": 0,
                "evaluation": f"f{i}",
                "method": m,
                "metric": metric,
                "value": v,
            }
            for m, vs in values.items()
            for i, v in enumerate(vs)
        ]
    )


def test_paired_comparison_known_answers():
    ours, theirs = [0.9, 0.8, 0.7, 0.6], [0.5, 0.8, 0.75, 0.4]
    out = paired_comparison(_tidy({"rnadiff (cf)": ours, "additive": theirs}, "r2_mean_top100"))
    (row,) = out.to_dict("records")  # only our method is compared against the others
    adv = np.subtract(ours, theirs)
    assert (row["method"], row["reference"], row["n"]) == ("rnadiff (cf)", "additive", 4)
    assert row["mean"] == pytest.approx(adv.mean())
    assert row["se"] == pytest.approx(adv.std(ddof=1) / 2)
    assert (row["better"], row["equal"], row["worse"]) == (2, 1, 1)
    assert row["verdict"] == "tie"  # mean 0.1375, se 0.096: within 2 se

    # lower is better for E-distance: a consistently smaller distance is "better"
    e = paired_comparison(
        _tidy({"rnadiff": [1.0, 1.1, 0.9], "scgen": [2.0, 2.2, 2.1]}, "edistance")
    ).iloc[0]
    assert e["mean"] == pytest.approx(1.1) and e["verdict"] == "better"
    assert (e["better"], e["worse"]) == (3, 0)
    # kNN AUC is best at 0.5: 0.55 beats 0.3 (|0.05| < |0.2|) and 0.45 loses to 0.5
    k = paired_comparison(_tidy({"rnadiff": [0.55, 0.45], "x": [0.3, 0.5]}, "knn_auc")).iloc[0]
    assert k["mean"] == pytest.approx(((0.2 - 0.05) + (0.0 - 0.05)) / 2)
    assert (k["better"], k["worse"]) == (1, 1)
    # consistently worse is "worse"
    w = paired_comparison(_tidy({"rnadiff": [0.1, 0.2, 0.3], "x": [0.5, 0.6, 0.8]}, "mrr"))
    assert w.iloc[0]["verdict"] == "worse"


def test_paired_comparison_pairs_only_shared_evaluations():
    rows = _tidy({"rnadiff": [0.5, 0.6, 0.7], "x": [0.4, 0.5]}, "pearson_delta_top100")
    rows = pd.concat([rows, _tidy({"rnadiff": [9.0], "x": [1.0]}, "pearson_delta_top100", "u")])
    out = paired_comparison(rows).set_index("task")
    assert out.loc["t", "n"] == 2 and out.loc["t", "mean"] == pytest.approx(0.1)
    assert out.loc["u", "n"] == 1 and np.isnan(out.loc["u", "se"])
    assert out.loc["u", "verdict"] == "tie"  # one pair is never a verdict
    with pytest.raises(ValueError, match="evaluation"):
        paired_comparison(rows.drop(columns="evaluation"))


def test_saved_predictions_score_the_same_after_loading(kang_small, tmp_path):
    split = list(splits.kang_loo_celltype(kang_small))[2]
    config = BenchConfig(n_top_genes=60)
    prep = prepare(split, config)
    predictions = baseline_predictions(split, prep)
    path = save_predictions(tmp_path / "t" / "s.npz", split, 2, list(prep.state.genes), predictions)
    assert [p.name for p in path.parent.iterdir()] == ["s.npz"]  # no temporary file left
    meta, loaded = load_predictions(path)
    assert (meta["task"], meta["fold"], meta["seed"], meta["index"]) == (
        split.task,
        str(split.fold),
        split.seed,
        2,
    )
    assert meta["genes"] == list(prep.state.genes)
    assert loaded.keys() == predictions.keys()
    for ev, preds in predictions.items():
        assert loaded[ev].keys() == preds.keys()
        for method, x in preds.items():
            assert loaded[ev][method].dtype == np.asarray(x).dtype
            np.testing.assert_array_equal(loaded[ev][method], x)
    pd.testing.assert_frame_equal(
        score_split(split, prep, loaded, config), score_split(split, prep, predictions, config)
    )


def test_loading_predictions_of_another_format_fails(tmp_path):
    bad = tmp_path / "bad.npz"
    meta = np.frombuffer(b'{"format": 99, "entries": []}', dtype=np.uint8)
    np.savez(bad, meta=meta)
    with pytest.raises(ValueError, match="unknown predictions format 99"):
        load_predictions(bad)
