"""Which rnadiff size and training budget keep quality on Kang 2018 at ~30-40 s per model?

For each configuration (network size x training schedule) and each leave-one-cell-type-out
fold: train on one thread, predict the held-out stimulated cells with every transfer setting
(counterfactual and generation), and score next to the additive baseline with the benchmark's
own preprocessing and metrics. Rows are appended to ``rows.csv`` after every fold (a rerun
skips the (config, fold) pairs already there); ``summary.md`` is rewritten from all rows.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 RNADIFF_DATA_DIR=../shared/data \\
        .venv/bin/python benchmarks/speed_study.py --configs B,C --folds "B cells,CD14+ Monocytes"
    .venv/bin/python benchmarks/speed_study.py --summary-only
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rnadiff import datasets
from rnadiff._config import ModelConfig, NetworkConfig, PreprocessConfig, TrainConfig
from rnadiff.data import _splits as splits
from rnadiff.evaluation._benchmark import BenchConfig, baseline_predictions, prepare, score_split
from rnadiff.model import RNADiffusion

OUT = Path("benchmarks/results/speed_study")
BENCH = BenchConfig()
ADDITIVE = "baseline: additive"
BASELINES = (ADDITIVE, "baseline: linear (ridge)")
MODES = [
    ("guide", 2.0),
    ("guide", 3.0),
    ("compose", 1.0),
    ("compose", 1.5),
    ("none", None),
    ("guide", 4.0),  # beyond the brief's settings: is the best scale at the edge?
    ("compose", 2.0),
]
METRICS = ["pearson_delta_top100", "r2_mean_top100", "edistance", "r2_mean_all"]
LOWER_IS_BETTER = {"edistance"}

# name -> (network, training); unset TrainConfig fields keep their defaults
CONFIGS: dict[str, tuple[dict, dict]] = {
    "A": (dict(width=512, depth=4, emb_dim=128), dict(max_steps=2000, lr=1e-3)),
    "B": (dict(width=256, depth=3, emb_dim=128), dict(max_steps=1000, lr=2e-3)),
    "C": (dict(width=256, depth=3, emb_dim=128), dict(max_steps=600, lr=3e-3)),
    "D": (dict(width=384, depth=3, emb_dim=128), dict(max_steps=800, lr=2e-3)),
    # E: budget ~C (params x batch x steps). The default EMA (0.999, a ~1000-step horizon)
    # still averages in early weights when training is this short: shorten it.
    "E1": (
        dict(width=256, depth=3, emb_dim=128),
        dict(max_steps=600, lr=3e-3, warmup_steps=50, ema_decay=0.99),
    ),
    "E2": (  # twice the updates at half the batch
        dict(width=256, depth=3, emb_dim=128),
        dict(max_steps=1200, batch_size=128, lr=2e-3, warmup_steps=50, ema_decay=0.995),
    ),
    "E3": (  # one block fewer, more steps
        dict(width=256, depth=2, emb_dim=128),
        dict(max_steps=800, lr=3e-3, warmup_steps=50, ema_decay=0.995),
    ),
    "E4": (  # narrow, many steps
        dict(width=128, depth=3, emb_dim=64),
        dict(max_steps=1500, lr=3e-3, warmup_steps=50, ema_decay=0.995),
    ),
    "E5": (  # batch 512, fewer steps
        dict(width=256, depth=3, emb_dim=128),
        dict(max_steps=300, batch_size=512, lr=3e-3, warmup_steps=50, ema_decay=0.99),
    ),
}


def method_name(kind: str, mode: str, scale: float | None) -> str:
    return f"{kind} {mode}" if scale is None else f"{kind} {mode} {scale:g}"


def run_fold(split: splits.Split, name: str) -> pd.DataFrame:
    net, tr = CONFIGS[name]
    prep = prepare(split, BENCH)
    preds = {
        ev: {m: p for m, p in methods.items() if m in BASELINES}
        for ev, methods in baseline_predictions(split, prep).items()
    }
    train = split.train.copy()
    RNADiffusion.setup_anndata(train, **split.setup)
    config = ModelConfig(
        preprocess=PreprocessConfig(n_top_genes=BENCH.n_top_genes), network=NetworkConfig(**net)
    )
    model = RNADiffusion(train, config=config, seed=split.seed)
    train_config = TrainConfig(**{"seed": split.seed, **tr})
    t0 = time.perf_counter()
    model.train(config=train_config, progress=False)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    kw = dict(steps=BENCH.sampler_steps, seed=split.seed, progress=False)
    for ev in split.evaluations:
        for mode, scale in MODES:
            tkw = dict(transfer=mode, transfer_scale=scale, **kw)
            preds[ev.name][method_name("cf", mode, scale)] = model.predict(
                ev.source, target=ev.target, **tkw
            ).X
            preds[ev.name][method_name("gen", mode, scale)] = model.generate(
                ev.condition, n_cells=ev.real.n_obs, **tkw
            ).X
    predict_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = score_split(split, prep, preds, BENCH)
    score_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.denoiser.parameters())
    losses = [h["loss"] for h in model.history[-5:]]
    final_loss = float(np.mean(losses)) if losses else float("nan")
    print(
        f"{name} / {split.fold} / seed {split.seed}: train {train_s:.1f}s, "
        f"predict {predict_s:.1f}s, "
        f"score {score_s:.1f}s, {n_params / 1e6:.2f}M params, "
        f"final loss {final_loss:.4f}",
        flush=True,
    )
    return rows.assign(
        config=name,
        train_s=train_s,
        predict_s=predict_s,
        n_params=n_params,
        final_loss=final_loss,
        **{f"net_{k}": v for k, v in net.items()},
        **{f"train_{k}": v for k, v in train_config.to_dict().items() if k != "seed"},
    )


def _table(wide: pd.DataFrame, add: pd.DataFrame, first: str) -> list[str]:
    """Markdown rows: mean of each metric, and wins vs the additive baseline of the same run."""
    out = [
        f"| {first} | " + " | ".join(METRICS) + " | wins vs additive |",
        "|---" * (len(METRICS) + 2) + "|",
    ]
    for label, m in wide.groupby("label", sort=False):
        ref = add.loc[list(zip(m.config, m.seed, m.fold, strict=True))].to_numpy()
        val = m[METRICS].to_numpy()
        lower = np.array([k in LOWER_IS_BETTER for k in METRICS])
        better = np.where(lower, val < ref, val > ref).sum(axis=0)
        wins = "/".join(str(b) for b in better) if not label.endswith(ADDITIVE) else "-"
        means = " | ".join(f"{v:.3f}" for v in val.mean(axis=0))
        out.append(f"| {label} | {means} | {wins} of {len(m)} |")
    return out


def summarize(rows: pd.DataFrame) -> str:
    rows = rows[rows.metric.isin(METRICS)]
    meta = rows.groupby(["config", "seed", "fold"])[["train_s", "predict_s"]].first()
    wide = rows.pivot_table(
        index=["config", "seed", "fold", "method"], columns="metric", values="value"
    ).reset_index()
    add = wide[wide.method == ADDITIVE].set_index(["config", "seed", "fold"])[METRICS]
    configs = [c for c in CONFIGS if c in set(wide.config)]
    lines = [
        "# rnadiff speed study: Kang 2018, leave one cell type out",
        "",
        "Written by benchmarks/speed_study.py from rows.csv. Train seconds on one CPU thread",
        "(OMP_NUM_THREADS=1, torch.set_num_threads(1)); sampling = all transfer settings,",
        "counterfactual + generation, 20 solver steps. `wins` = runs (fold x seed) where the",
        "method beats the additive baseline of the same fold, per metric in column order.",
        "cf = counterfactual (`predict` from the fold's control cells), gen = `generate`.",
        "",
        "## Overview: the folds every config ran (B cells, CD14+ Monocytes; seed 0)",
        "",
    ]
    common = {"B cells", "CD14+ Monocytes"}
    key = ["baseline: additive", "cf guide 3", "cf compose 1.5", "gen guide 3", "gen compose 1.5"]
    sub = wide[wide.fold.isin(common) & (wide.seed == 0) & wide.method.isin(key)].copy()
    sub["label"] = sub.config + ": " + sub.method
    sub = sub.sort_values(["config", "method"], key=lambda c: c.map(_order(configs, key)))
    lines += _table(sub, add, "config: method")
    s0 = wide[(wide.seed == 0) & wide.method.isin(key)]
    n_folds = s0.groupby("config").fold.nunique()
    full = [c for c in configs if n_folds.get(c, 0) == 5]
    if len(full) > 1:
        sub = s0[s0.config.isin(full)].assign(label=lambda d: d.config + ": " + d.method)
        sub = sub.sort_values(["config", "method"], key=lambda c: c.map(_order(configs, key)))
        lines += ["", "## Overview: configs run on all five folds (seed 0)", ""]
        lines += _table(sub, add, "config: method")
    lines += ["", "| config | network | training | train s/fold | sampling s/fold | runs |"]
    lines += ["|---|---|---|---|---|---|"]
    for name in configs:
        m = meta.loc[name]
        net, tr = CONFIGS[name]
        lines.append(
            f"| {name} | {net} | {tr} | {m.train_s.mean():.1f} | {m.predict_s.mean():.1f} | "
            f"{len(m)} |"
        )
    for name in configs:
        w = wide[wide.config == name].assign(label=lambda d: d.method)
        m = meta.loc[name]
        runs = ", ".join(f"{f} (seed {sd}): {t:.0f} s" for (sd, f), t in m.train_s.items())
        lines += ["", f"## {name}: all runs", "", f"train: {runs}", ""]
        lines += _table(w, add, "method")
    return "\n".join(lines) + "\n"


def _order(*lists: list[str]):
    rank = {v: i for lst in lists for i, v in enumerate(lst)}
    return lambda v: rank.get(v, len(rank))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="B,C,D", help=f"comma-separated of {list(CONFIGS)}")
    parser.add_argument("--folds", default="B cells,CD14+ Monocytes", help="'all' or names")
    parser.add_argument("--seed", type=int, default=0, help="model and sampling seed")
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "rows.csv"
    done = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=["config", "fold", "seed"])
    if not args.summary_only:
        adata = datasets.load("kang2018_ifnb")
        wanted = None if args.folds == "all" else set(args.folds.split(","))
        todo = [
            s
            for s in splits.kang_loo_celltype(adata, seed=args.seed)
            if not wanted or s.fold in wanted
        ]
        for name in args.configs.split(","):
            for split in todo:
                if (
                    (done.config == name) & (done.fold == split.fold) & (done.seed == args.seed)
                ).any():
                    print(f"{name} / {split.fold} / seed {args.seed}: done, skipped", flush=True)
                    continue
                rows = run_fold(split, name)
                done = pd.concat([done, rows], ignore_index=True) if len(done) else rows
                done.to_csv(path, index=False)
                (OUT / "summary.md").write_text(summarize(done))
    (OUT / "summary.md").write_text(summarize(done))
    print((OUT / "summary.md").read_text())


if __name__ == "__main__":
    main()
