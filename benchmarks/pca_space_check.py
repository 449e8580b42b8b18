"""Which PCA space lets E-distance tell a perfect prediction from a poor one? (Kang 2018)

The population metrics (E-distance, MMD, kNN AUC) compare predicted and real cells after a
projection on principal axes. Fitted on a few hundred cells, such axes also fit those cells'
own noise, so cells that were in the fit lie farther apart than new cells of the same
population. This check needs no model. For each leave-one-cell-type-out fold and seed it splits
the held-out real stimulated cells in two halves, takes one half as "real" and the other as a
prediction that is perfect up to sampling (a new sample of the same population), and scores it
with the benchmark's E-distance in three spaces:

- ``real + control``: axes fitted on the real (half) and the real control cells (the
  benchmark's space before 2026-11-24);
- ``training cells``: axes fitted on the split's training cells;
- ``pooled``: axes fitted on the two compared populations together (the benchmark's space now).

Next to it, in each space, the additive baseline (the control cells of the held-out type plus
the mean stimulation shift of the other types) against the same real half: a prediction that
should score worse than the perfect one. Results: ``benchmarks/results/pca_space_check.csv``.

    RNADIFF_DATA_DIR=../shared/data .venv/bin/python benchmarks/pca_space_check.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from rnadiff import datasets
from rnadiff.data import _splits as splits
from rnadiff.evaluation._benchmark import BenchConfig, baseline_predictions, prepare
from rnadiff.evaluation._distances import energy_distance, fit_pca, project

OUT = Path("benchmarks/results/pca_space_check.csv")


def spaces(real: np.ndarray, pred: np.ndarray, control: np.ndarray, train: np.ndarray) -> dict:
    return {
        "real + control": np.vstack([real, control]),
        "training cells": train,
        "pooled": np.vstack([real, pred]),
    }


def fold_rows(split, seed: int) -> list[dict]:
    prep = prepare(split, BenchConfig())
    (ev,) = split.evaluations
    pops = prep.evaluations[ev.name]
    real_all, control = pops["real"], pops["control"]
    additive = baseline_predictions(split, prep)[ev.name]["baseline: additive"]
    order = np.random.default_rng(seed).permutation(len(real_all))
    half = len(order) // 2
    real, perfect = real_all[order[:half]], real_all[order[half:]]
    rows = []
    for name, pred in (("perfect (other half of the real cells)", perfect), ("additive", additive)):
        for space, data in spaces(real, pred, control, prep.train).items():
            pca = fit_pca(data, n_components=50, seed=seed)
            e = energy_distance(project(pred, pca), project(real, pca))
            row = {"fold": split.fold, "seed": seed, "prediction": name, "space": space}
            rows.append(row | {"edistance": e})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    data = datasets.load("kang2018_ifnb")
    rows = []
    for seed in range(args.seeds):
        for split in splits.kang_loo_celltype(data, seed=seed):
            rows += fold_rows(split, seed)
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    summary = table.pivot_table(
        index=["prediction", "fold"], columns="space", values="edistance", aggfunc="mean"
    )
    print(summary.round(2).to_string())


if __name__ == "__main__":
    main()
