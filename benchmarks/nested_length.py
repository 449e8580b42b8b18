"""Does the training-length default owe Kang's result to being chosen on the test folds?

The default length (800 steps on a Kang fold) was picked by comparing 600, 800 and 1200 steps
on the benchmark's own held-out cell types (`benchmarks/results/training_length/`). This study
repeats the choice without looking at them (nested validation, seed 0): for each outer fold
(held-out stimulated cell type T) the candidates are compared on inner folds built from the
outer training cells alone, each other cell type's stimulated cells held out in turn (4 inner
folds) and predicted counterfactually from its own control cells, exactly as the benchmark
does. A candidate's inner score per target metric (Pearson delta top-100 and R² of the top-100
DE genes' means, higher is better; E-distance, lower) is its mean over the inner folds; the
candidates are ranked per metric and the best mean rank wins (a tie goes to fewer steps). The
outer fold is then scored with the chosen length: its rows are read from the study's outer
runs at seed 0 (`training_length/kang_seed0_rows.csv`, same splits and code), which this
script first checks against a fresh run of the default.

Writes `benchmarks/results/nested_length/` (`inner.csv`: every inner run; `choice.csv`: the
choice and outer scores per fold; `summary.md`).

    RNADIFF_DATA_DIR=../shared/data .venv/bin/python benchmarks/nested_length.py [--jobs 2]

60 inner trainings (5 outer x 4 inner x 3 lengths), about 10 min on 2 cores.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path("benchmarks/results/nested_length")
OUTER_ROWS = Path("benchmarks/results/training_length/kang_seed0_rows.csv")
LENGTHS = (600, 800, 1200)
METRICS = {"pearson_delta_top100": True, "r2_mean_top100": True, "edistance": False}
CF = "rnadiff (counterfactual)"


def _outer_splits(seed: int):
    from rnadiff import datasets
    from rnadiff.data import splits

    return {s.fold: s for s in splits.kang_loo_celltype(datasets.load("kang2018_ifnb"), seed=seed)}


def inner_run(outer: str, inner: str, steps: int, seed: int) -> dict:
    """Train on the outer fold's training cells minus ``inner``'s stimulated cells; score the
    counterfactual of ``inner``."""
    import torch

    from rnadiff.data import splits
    from rnadiff.evaluation.benchmark import BenchConfig, prepare, rnadiff_predictions
    from rnadiff.evaluation.metrics import response_metrics

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    train = _outer_splits(seed)[outer].train
    split = next(s for s in splits.kang_loo_celltype(train, seed=seed) if s.fold == inner)
    config = BenchConfig(max_steps=steps)
    prep = prepare(split, config)
    (ev,) = split.evaluations
    pops = prep.evaluations[ev.name]
    preds, _, _ = rnadiff_predictions(split, config)
    m = response_metrics(
        preds[ev.name][CF],
        pops["real"],
        pops["control"],
        top_n=(20, 100),
        distributional=True,
        seed=seed,
    )
    row = {"outer": outer, "inner": inner, "steps": steps, "seed": seed}
    row |= {k: float(m[k]) for k in METRICS}
    return row | {"seconds": time.perf_counter() - t0}


def outer_check(fold: str, seed: int) -> dict:
    """A fresh benchmark run of ``fold`` at the default length (800 steps)."""
    import torch

    from rnadiff.evaluation.benchmark import BenchConfig, run_split

    torch.set_num_threads(1)
    rows, _ = run_split(_outer_splits(seed)[fold], BenchConfig(), log=lambda _: None)
    rows = rows[(rows.method == CF) & rows.metric.isin(list(METRICS))]
    return {"fold": fold, **dict(zip(rows.metric, rows.value, strict=True))}


def choose(inner: pd.DataFrame) -> pd.DataFrame:
    """Per outer fold: each length's mean inner score per metric, its rank and the choice."""
    means = inner.groupby(["outer", "steps"])[list(METRICS)].mean().reset_index()
    ranks = []
    for _, g in means.groupby("outer"):
        g = g.copy()
        for metric, higher in METRICS.items():
            g[f"rank_{metric}"] = g[metric].rank(ascending=not higher, method="average")
        g["mean_rank"] = g[[f"rank_{m}" for m in METRICS]].mean(axis=1)
        best = g.sort_values(["mean_rank", "steps"]).iloc[0]["steps"]
        g["chosen"] = g["steps"] == best
        ranks.append(g)
    return pd.concat(ranks, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    t_start = time.perf_counter()
    folds = list(_outer_splits(args.seed))
    outer_rows = pd.read_csv(OUTER_ROWS)
    outer_rows = outer_rows[
        (outer_rows.method == CF) & outer_rows.metric.isin(list(METRICS))
    ].pivot_table(index=["fold", "steps"], columns="metric", values="value")
    jobs = [(o, i, n, args.seed) for o in folds for i in folds if i != o for n in LENGTHS]
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
        checks = [pool.submit(outer_check, f, args.seed) for f in folds]
        futures = [pool.submit(inner_run, *job) for job in jobs]
        inner = []
        for k, future in enumerate(futures):
            inner.append(future.result())
            r = inner[-1]
            print(
                f"[{k + 1}/{len(jobs)}] {r['outer']} / {r['inner']} {r['steps']}: "
                f"E {r['edistance']:.3f} ({r['seconds']:.0f} s)",
                flush=True,
            )
        checks = pd.DataFrame([c.result() for c in checks]).set_index("fold")
    # the stored outer rows must be what the current code gives at the default length
    stored = outer_rows.xs(800, level="steps")[list(METRICS)]
    diff = float(np.abs(stored.loc[checks.index] - checks[list(METRICS)]).to_numpy().max())
    print(f"stored 800-step outer rows vs a fresh run: largest difference {diff:.2e}")
    inner = pd.DataFrame(inner)
    ranked = choose(inner)
    chosen = ranked[ranked.chosen].set_index("outer")["steps"].astype(int)
    rows = []
    for fold in folds:
        for label, steps in (
            ("nested choice", chosen[fold]),
            *((f"fixed {n}", n) for n in LENGTHS),
        ):
            rows.append(
                {"fold": fold, "rule": label, "steps": steps, **outer_rows.loc[(fold, steps)]}
            )
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    inner.to_csv(args.out / "inner.csv", index=False)
    ranked.to_csv(args.out / "inner_means.csv", index=False)
    table.to_csv(args.out / "choice.csv", index=False)
    means = table.groupby("rule", sort=False)[list(METRICS)].mean()
    lines = [
        "# Nested choice of the training length (Kang, seed 0; `benchmarks/nested_length.py`)",
        "",
        f"Outer rows checked against a fresh run of the default: largest difference {diff:.1e}.",
        "",
        "| outer fold | chosen steps | inner mean ranks (600 / 800 / 1200) |",
        "|---|---|---|",
    ]
    for fold in folds:
        g = ranked[ranked.outer == fold].set_index("steps")["mean_rank"]
        ranks = " / ".join(f"{g[n]:.2f}" for n in LENGTHS)
        lines.append(f"| {fold} | {chosen[fold]} | {ranks} |")
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
    lines += ["", f"{len(jobs)} inner runs, {time.perf_counter() - t_start:.0f} s wall."]
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
