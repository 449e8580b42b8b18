"""Where should training put its noise levels? Papalexi discrimination vs Kang transfer.

rnadiff trains on noise levels ``ln(sigma) ~ N(p_mean, p_std^2)`` (EDM's image default,
``p_mean = -1.2``). A covariate's mean effect is what the denoiser must learn at high noise
levels (there it returns ``E[x0 | condition]``); at low levels it mostly copies its input. This
study trains rnadiff with other ``p_mean`` values and measures

- Papalexi 2021 seen knock-outs (``papalexi``): the discrimination score of the counterfactual
  predictions (guidance 1) and how large the predicted mean effects are: the least-squares
  slope of the predicted mean change (prediction minus the model's own reconstruction of the
  control cells) on the training mean shift of each knock-out. Next to it the additive baseline
  and, as a diagnostic of the metric, the additive baseline with its shift doubled.
- Kang 2018 leave-one-cell-type-out (``kang``): the benchmark's four headline metrics of the
  counterfactual at ``compose`` transfer scales 1, 1.25 and 1.5.

Models are trained without effect calibration (``TrainConfig.calibration_cells=0``): the study
measures the network's own effects, which calibration would rescale.

Rows are appended to ``rows.csv`` after every split (a rerun skips what is there);
``summary.md`` is rewritten from all rows.

    OMP_NUM_THREADS=1 RNADIFF_DATA_DIR=../shared/data .venv/bin/python \\
        benchmarks/noise_level_study.py --task papalexi --p-mean -1.2,0,1 --seeds 0,1,2
    .venv/bin/python benchmarks/noise_level_study.py --summary-only
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rnadiff import datasets
from rnadiff._config import ModelConfig
from rnadiff.data import _splits as splits
from rnadiff.evaluation._benchmark import BenchConfig, baseline_predictions, prepare, score_split
from rnadiff.evaluation._design_tasks import _means, _model_order
from rnadiff.evaluation._metrics import discrimination_score
from rnadiff.model import RNADiffusion

OUT = Path("benchmarks/results/noise_level_study")
KANG_METRICS = ["pearson_delta_top100", "r2_mean_top100", "edistance", "r2_mean_all"]
TRANSFER_SCALES = (1.0, 1.25, 1.5)


def _config(p_mean: float) -> BenchConfig:
    base = ModelConfig()
    model = dataclasses.replace(base, diffusion=dataclasses.replace(base.diffusion, p_mean=p_mean))
    return BenchConfig(model=model)


def _train(split, config: BenchConfig) -> tuple[RNADiffusion, float]:
    train = split.train.copy()
    RNADiffusion.setup_anndata(train, **split.setup)
    model = RNADiffusion(train, config=config.model_config(), seed=split.seed)
    t0 = time.perf_counter()
    # the network's own effects: no effect calibration (it would hide the shrinkage studied)
    train_config = dataclasses.replace(config.train_config(split.seed), calibration_cells=0)
    model.train(config=train_config, progress=False)
    return model, time.perf_counter() - t0


def _to_prep(model: RNADiffusion, prep, x: np.ndarray) -> np.ndarray:
    """Model gene order -> the benchmark's gene order (the same genes)."""
    out = np.empty_like(x)
    out[:, _model_order(prep, model)] = x
    return out


def papalexi_rows(p_mean: float, seed: int) -> list[dict]:
    data = splits.papalexi_clean(datasets.load("papalexi2021"))
    (split,) = list(splits.papalexi_seen(data, seed=seed))
    config = _config(p_mean)
    prep = prepare(split, config)
    model, train_s = _train(split, config)
    key, control_name = split.setup["perturbation_key"], split.setup["control"]
    source = split.evaluations[0].source  # the held-out control cells, shared by all
    real = {ev.name: prep.evaluations[ev.name]["real"] for ev in split.evaluations}
    control = prep.evaluations[split.evaluations[0].name]["control"]
    kw = dict(seed=seed, progress=False)
    pred = {
        ev.name: _to_prep(model, prep, model.predict(source, target=ev.target, **kw).X)
        for ev in split.evaluations
    }
    recon = _to_prep(model, prep, model.predict(source, perturbation=control_name, **kw).X)
    train_mean = _means(prep, split.train.obs, key)
    shift = {k: train_mean[k] - train_mean[control_name] for k in real}
    slopes = {}
    for k, p in pred.items():
        m = p.mean(0) - recon.mean(0)
        slopes[k] = float(m @ shift[k] / (shift[k] @ shift[k]))
    c = control.mean(0)
    additive = {k: v["baseline: additive"] for k, v in baseline_predictions(split, prep).items()}
    scores = {
        "discrimination rnadiff": pred,
        "discrimination additive": additive,  # the benchmark's: source + shift, clipped at 0
        "discrimination mean shift, unclipped (diagnostic)": {
            k: (c + s)[None] for k, s in shift.items()
        },
        "discrimination mean shift x2, unclipped (diagnostic)": {
            k: (c + 2 * s)[None] for k, s in shift.items()
        },
    }
    strongest = sorted(shift, key=lambda k: -np.abs(shift[k]).sum())[:5]
    row = dict(task="papalexi", p_mean=p_mean, seed=seed, train_s=round(train_s, 1))
    values = {name: discrimination_score(p, real, control)[1] for name, p in scores.items()}
    values |= {
        "effect slope (mean over knock-outs)": float(np.mean(list(slopes.values()))),
        "effect slope (5 largest shifts)": float(np.mean([slopes[k] for k in strongest])),
    }
    return [dict(row, fold="all", setting="", metric=k, value=v) for k, v in values.items()]


def response_rows(task: str, p_mean: float, seed: int) -> list[dict]:
    """Kang folds (at each transfer scale) or the HSMM split: the four headline metrics."""
    config = _config(p_mean)
    if task == "kang":
        split_list = splits.kang_loo_celltype(datasets.load("kang2018_ifnb"), seed=seed)
    else:
        split_list = splits.hsmm_time(datasets.load("trapnell2014_hsmm"), seed=seed)
    rows = []
    for split in split_list:
        prep = prepare(split, config)
        model, train_s = _train(split, config)
        (ev,) = split.evaluations
        preds = {ev.name: {}}
        for scale in TRANSFER_SCALES if task == "kang" else (None,):
            name = "counterfactual" if scale is None else f"transfer_scale {scale}"
            preds[ev.name][name] = model.predict(
                ev.source, target=ev.target, seed=seed, progress=False, transfer_scale=scale
            ).X
        if p_mean == ModelConfig().diffusion.p_mean:  # the baseline once, with the default
            additive = baseline_predictions(split, prep)[ev.name]["baseline: additive"]
            preds[ev.name]["additive"] = additive
        scored = score_split(split, prep, preds, config)
        scored = scored[scored.metric.isin(KANG_METRICS)]
        for (method, metric), value in scored.groupby(["method", "metric"]).value.mean().items():
            rows.append(
                dict(
                    task=task,
                    p_mean=p_mean,
                    seed=seed,
                    train_s=round(train_s, 1),
                    fold=split.fold,
                    setting=method,
                    metric=metric,
                    value=float(value),
                )
            )
        print(f"{task} p_mean={p_mean} seed={seed} {split.fold}", flush=True)
    return rows


def _md(table: pd.DataFrame) -> str:
    """A pandas table as a markdown table (no tabulate dependency)."""

    def name(v) -> str:
        return " ".join(str(x) for x in v) if isinstance(v, (tuple, list)) else str(v)

    head = [name(list(table.index.names) if table.index.nlevels > 1 else table.index.name or "")]
    head += [name(c) for c in table.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for idx, values in zip(table.index, table.to_numpy(), strict=True):
        lines.append("| " + " | ".join([name(idx), *(f"{v:.3f}" for v in values)]) + " |")
    return "\n".join(lines)


def summarize(rows: pd.DataFrame) -> str:
    lines = ["# Noise-level study (`benchmarks/noise_level_study.py`)", ""]
    pap = rows[rows.task == "papalexi"]
    if len(pap):
        table = pap.pivot_table(index="metric", columns="p_mean", values="value", aggfunc="mean")
        seeds = pap.groupby("p_mean").seed.nunique()
        lines += [
            "## Papalexi 2021 seen knock-outs (mean over seeds)",
            "",
            "seeds per p_mean: " + ", ".join(f"{k}: {v}" for k, v in seeds.items()),
            "",
            table.round(3).pipe(_md),
            "",
        ]
    titles = {
        "kang": "Kang 2018 leave-one-cell-type-out, counterfactual (mean over folds, seeds)",
        "hsmm": "HSMM 48 h from 24 h, counterfactual (mean over seeds)",
    }
    for task, title in titles.items():
        sub = rows[rows.task == task]
        if not len(sub):
            continue
        # the additive baseline does not depend on p_mean (it is scored with the default)
        is_base = sub.setting == "additive"
        sub = sub.assign(p_mean=np.where(is_base, "-", sub.p_mean.astype(str)))
        mean = sub.pivot_table(
            index=["p_mean", "setting"], columns="metric", values="value", aggfunc="mean"
        )
        lines += [f"## {title}", "", mean.round(3).pipe(_md), ""]
        if task != "kang":
            continue
        for metric in KANG_METRICS:
            per_fold = sub[sub.metric == metric].pivot_table(
                index="fold", columns=["p_mean", "setting"], values="value", aggfunc="mean"
            )
            lines += [f"### {metric} per fold (mean over seeds)", "", per_fold.round(3).pipe(_md)]
            lines += [""]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=["papalexi", "kang", "hsmm"], default="papalexi")
    parser.add_argument("--p-mean", default="-1.2,0,1", help="comma-separated p_mean values")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--summary-only", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "rows.csv"
    if not args.summary_only:
        torch.set_num_threads(1)
        done = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=["task", "p_mean"])
        for p_mean in [float(v) for v in args.p_mean.split(",")]:
            for seed in [int(v) for v in args.seeds.split(",")]:
                have = done[(done.task == args.task) & (done.p_mean == p_mean)]
                if "seed" in have and (have.seed == seed).any():
                    continue
                if args.task == "papalexi":
                    new = pd.DataFrame(papalexi_rows(p_mean, seed))
                else:
                    new = pd.DataFrame(response_rows(args.task, p_mean, seed))
                new.to_csv(path, mode="a", header=not path.exists(), index=False)
                print(f"{args.task} p_mean={p_mean} seed={seed} done", flush=True)
    rows = pd.read_csv(path)
    (args.out / "summary.md").write_text(summarize(rows))
    print(summarize(rows))


if __name__ == "__main__":
    main()
