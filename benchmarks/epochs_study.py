"""How many passes over a small data set before the network memorizes its cells? (HSMM)

``TrainConfig.max_epochs`` caps training at a number of passes over the training cells. This
study trains the HSMM time course (192 training cells) for several step counts with the cap
off and scores rnadiff's counterfactual on two splits:

* ``inner``: a split that never sees 48 h: train on 0 h and 72 h, predict 24 h from 0 h (the
  value of the cap was chosen here);
* ``outer``: the benchmark's ``hsmm_time`` split: predict the held-out 48 h from 24 h.

Per run: E-distance, R² of the top-100 DE genes' means, Pearson delta top-100 and the mean
gene variance of the predicted and the real cells (memorization shows as lost spread).

    RNADIFF_DATA_DIR=../shared/data .venv/bin/python benchmarks/epochs_study.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from rnadiff import TrainConfig, datasets
from rnadiff.data import _splits as splits
from rnadiff.evaluation._benchmark import BenchConfig, prepare, rnadiff_predictions
from rnadiff.evaluation._metrics import response_metrics

OUT = Path("benchmarks/results/epochs_study")
STEPS = (150, 300, 600, 1200)


def split_for(which: str, data, seed: int):
    if which == "outer":
        return next(splits.hsmm_time(data, seed=seed))
    hours = pd.to_numeric(data.obs["Hours"]).to_numpy()
    return next(splits.hsmm_time(data[hours != 48].copy(), seed=seed, held_out=24))


def run(which: str, data, seed: int, steps: int) -> dict:
    split = split_for(which, data, seed)
    config = BenchConfig(max_steps=steps, train=TrainConfig(max_epochs=None))
    prep = prepare(split, config)
    (ev,) = split.evaluations
    pops = prep.evaluations[ev.name]
    preds, _, _ = rnadiff_predictions(split, config)
    cf = preds[ev.name]["rnadiff (counterfactual)"]
    m = response_metrics(
        cf, pops["real"], pops["control"], top_n=(100,), distributional=True, seed=seed
    )
    n = split.train.n_obs
    return {
        "split": which,
        "seed": seed,
        "steps": steps,
        "passes": steps * min(config.train_config(seed).batch_size, n) / n,
        "edistance": m["edistance"],
        "r2_mean_top100": m["r2_mean_top100"],
        "pearson_delta_top100": m["pearson_delta_top100"],
        "gene_variance_predicted": float(cf.var(0).mean()),
        "gene_variance_real": float(pops["real"].var(0).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", default=",".join(map(str, STEPS)))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = datasets.load("trapnell2014_hsmm")
    steps = [int(s) for s in args.steps.split(",")]
    rows = pd.DataFrame(
        [
            run(which, data, seed, n)
            for which in ("inner", "outer")
            for seed in range(args.seeds)
            for n in steps
        ]
    )
    rows.to_csv(args.out / "rows.csv", index=False)
    cols = ["passes", "edistance", "r2_mean_top100", "pearson_delta_top100"]
    cols += ["gene_variance_predicted", "gene_variance_real"]
    summary = rows.groupby(["split", "steps"])[cols].mean()
    text = (
        f"# rnadiff counterfactual on HSMM by training length ({args.seeds} seeds, no cap; "
        "`benchmarks/epochs_study.py`)\n\ninner: train 0 h + 72 h, predict 24 h from 0 h; "
        "outer: the benchmark's 48 h from 24 h.\n\n"
        "| split | steps | passes | E-distance | R² top-100 | Pearson delta top-100 | "
        "gene variance (predicted / real) |\n|---|---|---|---|---|---|---|\n"
        + "".join(
            f"| {s} | {n} | {r.passes:.0f} | {r.edistance:.3f} | {r.r2_mean_top100:.3f} | "
            f"{r.pearson_delta_top100:.3f} | {r.gene_variance_predicted:.3f} / "
            f"{r.gene_variance_real:.3f} |\n"
            for (s, n), r in summary.iterrows()
        )
    )
    (args.out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
