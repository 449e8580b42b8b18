"""Do Kang's results owe anything to defaults chosen on the test folds? (nested validation)

Some defaults were picked by comparing candidates on the benchmark's own held-out cell types:
the training length (600 / 800 / 1200 steps on a Kang fold, `benchmarks/results/
training_length/`) and the training noise levels (`DiffusionConfig.p_mean`, -1.2 / 0 / 1,
`benchmarks/noise_level_study.py`). This script repeats such a choice without looking at them
(seed 0): for each outer fold (held-out stimulated cell type T) the candidates are compared on
inner folds built from the outer training cells alone, each other cell type's stimulated cells
held out in turn (4 inner folds) and predicted counterfactually from its own control cells,
exactly as the benchmark does. A candidate's inner score per target metric (Pearson delta
top-100 and R² of the top-100 DE genes' means, higher is better; E-distance, lower) is its mean
over the inner folds; the candidates are ranked per metric and the best mean rank wins (a tie
goes to the candidate listed first: fewer steps, or the default noise levels). Each outer fold
is then scored with its chosen candidate and with every candidate fixed.

- ``--param steps``: outer scores are read from the training-length study's runs at seed 0
  (`training_length/kang_seed0_rows.csv`), checked first against a fresh run of the default;
  writes `benchmarks/results/nested_length/`.
- ``--param p_mean`` (-1.2 / 0 / 1) and ``width`` (the network's hidden width, 128 / 256 /
  512; the committed `nested_width/` and `_seed1/` ran with 256 as the default and first
  candidate): outer scores are fresh runs of every candidate; writes
  `benchmarks/results/nested_<param>/` (``--seed 1``: `nested_<param>_seed1/`, and fresh outer
  runs for ``steps`` too).
- ``--param compose``: the scale of ``"compose"`` transfer (1.5 / 1.25 / 2), which changes only
  the prediction: one training per inner and outer fold serves every candidate, and the
  default's outer scores are checked against the benchmark's own ``run_split``.

Effect calibration (`TrainConfig.calibration_cells`) is not a candidate: it scales effects only
in contexts where a perturbation was measured, and Kang's held-out cell type never is (its
counterfactual keeps the ``compose`` scale), so it cannot change these scores (checked: an
inner fold with and without it gave the same E-distance, 3.168).

Files: `inner.csv` (every inner run), `inner_means.csv` (means, ranks, choice), `choice.csv`
(outer scores per fold and rule), `wins.csv` (per fold, does each rule beat the additive
baseline, scGen and CPA of the committed benchmark run at the same seed), `summary.md`.

    RNADIFF_DATA_DIR=../shared/data .venv/bin/python benchmarks/run.py \\
        --study nested_steps|nested_p_mean|nested_width|nested_compose [--jobs 2]

(each study file sets ``param``, ``seed`` and ``tag``; its procedure is :func:`run`)

The benchmark's configuration is rnadiff's defaults at the time of the run: the committed
folders without a tag were run at width 256 without spread calibration (before 2026-11-25);
`_w128` folders at width 128 with it.

60 inner trainings (5 outer x 4 inner x 3 candidates) on 2 cores: steps ~16 min, p_mean ~18
min and width ~19 min (15 outer runs more each); compose 20 inner and 10 outer trainings, ~7
min.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"
PARAMS = {  # candidates in order of preference (ties), the default, stored outer rows, folder
    "steps": (
        (600, 800, 1200),
        800,
        RESULTS / "studies/training_length/kang_seed0_rows.csv",
        "length",
    ),
    "p_mean": ((-1.2, 0.0, 1.0), -1.2, None, "p_mean"),
    # width/ and width_seed1/ were run when 256 was the default (before 2026-11-25)
    "width": ((128, 256, 512), 128, None, "width"),
    # "distance": the default since 2026-12-07, a scale from 1 (near-twin source) to 1.5
    # (rnadiff.conditioning.distance_transfer_scale); the folders before it ran (1.5, 1.25, 2)
    "compose": (("distance", 1.5, 1.25), "distance", None, "compose"),
    # the sampler's noise levels for a prediction (predict(steps=); BenchConfig.sampler_steps)
    "sampler_steps": ((20, 40), 20, None, "sampler_steps"),
}
# candidates that change only the prediction: one training serves them all
PREDICT_ONLY = {"compose": "transfer_scale", "sampler_steps": "steps"}
METRICS = {"pearson_delta_top100": True, "r2_mean_top100": True, "edistance": False}
CF = "rnadiff (counterfactual)"


def _fmt(value) -> str:
    return value if isinstance(value, str) else f"{value:g}"


def _rule(value) -> str:
    return "by distance" if value == "distance" else f"fixed {value}"


def config_for(param: str, value):
    """The benchmark's configuration with one default replaced (prediction-only parameters:
    the benchmark's own configuration)."""
    from rnadiff import DiffusionConfig, ModelConfig, NetworkConfig
    from rnadiff.evaluation._benchmark import BenchConfig

    if param in PREDICT_ONLY:
        return BenchConfig()
    if param == "steps":
        return BenchConfig(max_steps=int(value))
    if param == "p_mean":
        return BenchConfig(model=ModelConfig(diffusion=DiffusionConfig(p_mean=float(value))))
    if param == "width":
        return BenchConfig(model=ModelConfig(network=NetworkConfig(width=int(value))))
    raise ValueError(f"unknown parameter {param!r}")


def _scores(split, prep, pred) -> dict:
    """The benchmark's target metrics of one counterfactual prediction (as ``score_split``)."""
    from rnadiff.evaluation._metrics import response_metrics

    (ev,) = split.evaluations
    pops = prep.evaluations[ev.name]
    m = response_metrics(
        pred, pops["real"], pops["control"], top_n=(20, 100), distributional=True, seed=split.seed
    )
    return {k: float(m[k]) for k in METRICS}


def _predict_each(split, param: str, values) -> list[tuple[object, dict]]:
    """Train once with the benchmark's configuration; score the counterfactual made with each
    candidate value of a prediction-only parameter."""
    from rnadiff.evaluation._benchmark import prepare, rnadiff_predictions

    config = config_for(param, None)
    prep = prepare(split, config)
    (ev,) = split.evaluations
    _, _, model = rnadiff_predictions(split, config)
    kw = dict(steps=config.sampler_steps, seed=split.seed, progress=False, prior=True)
    out = []
    for v in values:
        given = None if v == "distance" else v  # None: the scale that follows the distance
        kw_v = {**kw, PREDICT_ONLY[param]: given}  # (may replace the benchmark's steps)
        pred = model.predict(ev.source, target=ev.target, **kw_v).X
        out.append((v, _scores(split, prep, pred)))
    return out


def _outer_splits(seed: int):
    from rnadiff import datasets
    from rnadiff.data import _splits as splits

    return {s.fold: s for s in splits.kang_loo_celltype(datasets.load("kang2018_ifnb"), seed=seed)}


def inner_run(param: str, outer: str, inner: str, values: tuple, seed: int) -> list[dict]:
    """Train on the outer fold's training cells minus ``inner``'s stimulated cells; score the
    counterfactual of ``inner`` for each candidate in ``values`` (one training per candidate;
    one in all for a prediction-only parameter)."""
    import torch

    from rnadiff.data import _splits as splits
    from rnadiff.evaluation._benchmark import prepare, rnadiff_predictions

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    train = _outer_splits(seed)[outer].train
    split = next(s for s in splits.kang_loo_celltype(train, seed=seed) if s.fold == inner)
    if param in PREDICT_ONLY:
        scored = _predict_each(split, param, values)
    else:
        scored = []
        for value in values:
            config = config_for(param, value)
            prep = prepare(split, config)
            preds, _, _ = rnadiff_predictions(split, config)
            scored.append((value, _scores(split, prep, preds[split.evaluations[0].name][CF])))
    seconds = (time.perf_counter() - t0) / len(scored)
    return [
        {"outer": outer, "inner": inner, "value": v, "seed": seed, **m, "seconds": seconds}
        for v, m in scored
    ]


def outer_run(param: str, fold: str, values: tuple, seed: int) -> list[dict]:
    """Benchmark runs of ``fold`` with each candidate in ``values``: rnadiff's counterfactual
    (prediction-only parameters: one training, and the default's scores from ``run_split``
    itself must equal the ones computed here)."""
    import torch

    from rnadiff.evaluation._benchmark import run_split

    torch.set_num_threads(1)
    split = _outer_splits(seed)[fold]
    if param in PREDICT_ONLY:
        rows = []
        for v, m in _predict_each(split, param, values):
            rows.append({"fold": fold, "value": v, **m})
        return rows
    rows = []
    for value in values:
        r, _ = run_split(split, config_for(param, value), log=lambda _: None)
        r = r[(r.method == CF) & r.metric.isin(list(METRICS))]
        rows.append({"fold": fold, "value": value, **dict(zip(r.metric, r.value, strict=True))})
    return rows


def default_check(fold: str, seed: int) -> dict:
    """``run_split``'s own counterfactual scores of ``fold`` with the benchmark's configuration,
    to check the scores of a prediction-only parameter's default against."""
    import torch

    from rnadiff.evaluation._benchmark import BenchConfig, run_split

    torch.set_num_threads(1)
    r, _ = run_split(_outer_splits(seed)[fold], BenchConfig(), log=lambda _: None)
    r = r[(r.method == CF) & r.metric.isin(list(METRICS))]
    return {"fold": fold, **dict(zip(r.metric, r.value, strict=True))}


def choose(inner: pd.DataFrame, values: tuple) -> pd.DataFrame:
    """Per outer fold: each candidate's mean inner score per metric, its rank and the choice."""
    means = inner.groupby(["outer", "value"], sort=False)[list(METRICS)].mean().reset_index()
    means["order"] = [values.index(v) for v in means["value"]]
    ranks = []
    for _, g in means.groupby("outer"):
        g = g.copy()
        for metric, higher in METRICS.items():
            g[f"rank_{metric}"] = g[metric].rank(ascending=not higher, method="average")
        g["mean_rank"] = g[[f"rank_{m}" for m in METRICS]].mean(axis=1)
        best = g.sort_values(["mean_rank", "order"]).iloc[0]["value"]
        g["chosen"] = g["value"] == best
        ranks.append(g.drop(columns="order"))
    return pd.concat(ranks, ignore_index=True)


RIVALS = {"baseline: additive": "additive", "scgen": "scGen", "cpa": "CPA"}


def fold_wins(table: pd.DataFrame, folds: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Per rule, fold, rival and metric: does the rule's outer score (``table``) beat the
    rival's score in a benchmark run (``folds``: rows of `folds.csv`) at the same seed?
    Higher is better for Pearson delta and R², lower for E-distance; a tie is no win."""
    folds = folds[
        (folds.task == "kang_loo_celltype")
        & (folds.seed == seed)
        & folds.method.isin(list(RIVALS))
        & folds.metric.isin(list(METRICS))
    ]
    rival = folds.set_index(["fold", "method", "metric"])["value"]
    rows = []
    for _, r in table.iterrows():
        for method in RIVALS:
            for metric, higher in METRICS.items():
                theirs = rival.get((r.fold, method, metric))
                if theirs is None:
                    continue
                win = r[metric] > theirs if higher else r[metric] < theirs
                rows.append(
                    {"rule": r.rule, "fold": r.fold, "rival": method, "metric": metric, "win": win}
                )
    return pd.DataFrame(rows, columns=["rule", "fold", "rival", "metric", "win"])


def run(param: str = "steps", *, seed: int = 0, jobs: int = 2, tag: str = "") -> None:
    """The nested choice of ``param`` (see the module docstring) into
    ``results/studies/nested/<param>[_seed<seed>][_<tag>]``; ``tag``: a suffix for a re-run
    after a change of the defaults (tagged runs make fresh outer runs)."""
    if param not in PARAMS:
        raise SystemExit(f"unknown nested parameter {param!r}; choose from {sorted(PARAMS)}")
    args = argparse.Namespace(param=param, seed=seed, jobs=jobs, tag=tag)
    values, default, stored_rows, folder = PARAMS[args.param]
    if args.seed != 0:  # stored rows are seed 0's; other seeds get fresh outer runs
        stored_rows, folder = None, f"{folder}_seed{args.seed}"
    if args.tag:
        stored_rows, folder = None, f"{folder}_{args.tag}"
    out = RESULTS / "studies" / "nested" / folder
    t_start = time.perf_counter()
    folds = list(_outer_splits(args.seed))
    predict_only = args.param in PREDICT_ONLY
    # one job per training: all candidates at once for a prediction-only parameter
    each = [values] if predict_only else [(v,) for v in values]
    jobs = [
        (args.param, o, i, vs, args.seed) for o in folds for i in folds if i != o for vs in each
    ]
    # outer runs: the default only (to check stored rows), or every candidate
    outer_each = [(default,)] if stored_rows is not None else each
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
        outer_futures = [
            pool.submit(outer_run, args.param, f, vs, args.seed) for f in folds for vs in outer_each
        ]
        check_futures = (
            [pool.submit(default_check, f, args.seed) for f in folds] if predict_only else []
        )
        futures = [pool.submit(inner_run, *job) for job in jobs]
        inner = []
        for k, future in enumerate(futures):
            for r in future.result():
                inner.append(r)
                print(
                    f"[{k + 1}/{len(jobs)}] {r['outer']} / {r['inner']} {args.param}="
                    f"{r['value']}: E {r['edistance']:.3f} ({r['seconds']:.0f} s)",
                    flush=True,
                )
        fresh = pd.DataFrame([r for f in outer_futures for r in f.result()])
        fresh = fresh.set_index(["fold", "value"])
        checked = pd.DataFrame([f.result() for f in check_futures])
    check = ""
    if stored_rows is not None:
        rows = pd.read_csv(stored_rows)
        outer = rows[(rows.method == CF) & rows.metric.isin(list(METRICS))].pivot_table(
            index=["fold", "steps"], columns="metric", values="value"
        )
        outer.index = outer.index.set_names(["fold", "value"])
        # the stored outer rows must be what the current code gives at the default
        diff = np.abs(outer.loc[fresh.index, list(METRICS)] - fresh[list(METRICS)])
        check = (
            f"Stored outer rows checked against a fresh run of the default: largest difference "
            f"{float(diff.to_numpy().max()):.1e}."
        )
        print(check)
    else:
        outer = fresh
    if predict_only:
        ours = fresh.xs(default, level="value").loc[checked["fold"], list(METRICS)]
        diff = np.abs(ours.to_numpy() - checked[list(METRICS)].to_numpy())
        check = (
            f"The default's outer scores checked against the benchmark's own run_split: largest "
            f"difference {float(diff.max()):.1e}."
        )
        print(check)
    inner = pd.DataFrame(inner)
    ranked = choose(inner, values)
    chosen = ranked[ranked.chosen].set_index("outer")["value"]
    table = pd.DataFrame(
        [
            {"fold": fold, "rule": label, "value": v, **outer.loc[(fold, v)]}
            for fold in folds
            for label, v in (("nested choice", chosen[fold]), *((_rule(v), v) for v in values))
        ]
    )
    out.mkdir(parents=True, exist_ok=True)
    inner.to_csv(out / "inner.csv", index=False)
    ranked.to_csv(out / "inner_means.csv", index=False)
    table.to_csv(out / "choice.csv", index=False)
    means = table.groupby("rule", sort=False)[list(METRICS)].mean()
    names = " / ".join(_fmt(v) for v in values)
    lines = [
        f"# Nested choice of `{args.param}` (Kang, seed {args.seed}; "
        f"`benchmarks/run.py --study nested_{args.param}`)",
        "",
        *([check, ""] if check else []),
        f"| outer fold | chosen {args.param} | inner mean ranks ({names}) |",
        "|---|---|---|",
    ]
    for fold in folds:
        g = ranked[ranked.outer == fold].set_index("value")["mean_rank"]
        ranks = " / ".join(f"{g[v]:.2f}" for v in values)
        lines.append(f"| {fold} | {_fmt(chosen[fold])} | {ranks} |")
    lines += [
        "",
        "Outer scores (counterfactual, mean over the 5 folds):",
        "",
        "| rule | Pearson delta top-100 | R² top-100 | E-distance |",
        "|---|---|---|---|",
    ]
    for rule, m in means.iterrows():
        lines.append(
            f"| {rule} | {m.pearson_delta_top100:.3f} | {m.r2_mean_top100:.3f} | "
            f"{m.edistance:.3f} |"
        )
    if (RESULTS / "latest" / "folds.csv").exists():
        wins = fold_wins(table, pd.read_csv(RESULTS / "latest" / "folds.csv"), args.seed)
        lines += [
            "",
            f"Folds (of {len(folds)}) where the rule beats each method of the benchmark's own "
            f"run (`folds.csv`, seed {args.seed}); Pearson delta top-100 / R² top-100 / "
            "E-distance:",
            "",
            "| rule | " + " | ".join(RIVALS.values()) + " |",
            "|---|" + "---|" * len(RIVALS),
        ]
        for rule, g in wins.groupby("rule", sort=False):
            cells = [
                " / ".join(str(int(g[(g.rival == r) & (g.metric == m)].win.sum())) for m in METRICS)
                for r in RIVALS
            ]
            lines.append(f"| {rule} | " + " | ".join(cells) + " |")
        wins.to_csv(out / "wins.csv", index=False)
    lines += [
        "",
        f"{len(inner)} inner scores from {len(jobs)} trainings, "
        f"{time.perf_counter() - t_start:.0f} s wall.",
    ]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
