"""Does the discrimination score reward exaggerated effects? (Papalexi 2021, seen knock-outs)

The benchmark's ``papalexi_seen`` splits (3 seeds) without any model: each knock-out's held-out
mean change is predicted by its training mean change (knock-out minus non-targeting training
cells, the additive baseline's shift) multiplied by a factor. For each factor: the
discrimination score (the benchmark's code, L1 as in cell-eval), and the accuracy of the
predicted mean change against the real held-out one (mean squared error over all genes and
over each knock-out's top-20 genes of the training change). A factor above 1 exaggerates every
effect; if discrimination rises while the error grows, the score can be raised without better
predictions, and a small lead on it means little.

    RNADIFF_DATA_DIR=../shared/data .venv/bin/python benchmarks/discrimination_scale.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from rnadiff import datasets
from rnadiff.data import splits
from rnadiff.evaluation.benchmark import BenchConfig, prepare
from rnadiff.evaluation.metrics import discrimination_score

OUT = Path("benchmarks/results/discrimination_scale")
FACTORS = (0.5, 0.7, 1.0, 1.3, 1.6, 2.0, 3.0)


def seed_rows(data, seed: int, factors=FACTORS) -> list[dict]:
    split = next(splits.papalexi_seen(data, seed=seed))
    prep = prepare(split, BenchConfig())
    key, control = split.setup["perturbation_key"], split.setup["control"]
    groups = split.train.obs[key].astype(str).to_numpy()
    ctrl_mean = prep.train[groups == control].mean(0)
    real = {ev.name: prep.evaluations[ev.name]["real"] for ev in split.evaluations}
    held_control = prep.evaluations[split.evaluations[0].name]["control"]
    c = held_control.mean(0)
    shift = {k: prep.train[groups == k].mean(0) - ctrl_mean for k in real}
    truth = {k: v.mean(0) - c for k, v in real.items()}
    rows = []
    for factor in factors:
        pred = {k: (c + factor * s)[None] for k, s in shift.items()}
        _, score = discrimination_score(pred, real, held_control)
        err_all = np.mean([np.mean((factor * shift[k] - truth[k]) ** 2) for k in real])
        err_top = np.mean(
            [
                np.mean(((factor * shift[k] - truth[k])[np.argsort(-np.abs(shift[k]))[:20]]) ** 2)
                for k in real
            ]
        )
        rows.append(
            {
                "seed": seed,
                "factor": factor,
                "discrimination": score,
                "mse_change_all": float(err_all),
                "mse_change_top20": float(err_top),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = splits.papalexi_clean(datasets.load("papalexi2021"))
    rows = pd.DataFrame([r for s in range(args.seeds) for r in seed_rows(data, s)])
    rows.to_csv(args.out / "rows.csv", index=False)
    table = rows.groupby("factor")[["discrimination", "mse_change_all", "mse_change_top20"]]
    summary = table.mean().round(4)
    text = (
        "# Discrimination of the training mean change times a factor (Papalexi seen, "
        f"{args.seeds} seeds; `benchmarks/discrimination_scale.py`)\n\n"
        + "| factor | discrimination | MSE of change, all genes | MSE of change, top-20 genes |\n"
        + "|---|---|---|---|\n"
        + "".join(
            f"| {f:g} | {r.iloc[0]:.3f} | {r.iloc[1]:.4f} | {r.iloc[2]:.4f} |\n"
            for f, r in summary.iterrows()
        )
    )
    (args.out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
