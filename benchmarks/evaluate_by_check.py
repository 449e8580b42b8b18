"""Does `rnadiff evaluate --by` score a screen as the benchmark does? (Papalexi seen, one seed)

Trains rnadiff on the benchmark's Papalexi 2021 seen-knock-outs split (as `benchmarks/run.py`
does), writes its counterfactual of every knock-out to one .h5ad (column `top_grna_target`)
and the held-out real cells (every knock-out and the non-targeting cells, raw counts) to
another, scores them with the command line (`rnadiff evaluate --by top_grna_target
--control-where top_grna_target=non-targeting`), and compares each knock-out's metrics with
`benchmarks/results/folds.csv` (same seed). Writes `benchmarks/results/evaluate_by_check.csv`
(per metric: the largest difference over knock-outs and both means).

    RNADIFF_DATA_DIR=../shared/data .venv/bin/python benchmarks/evaluate_by_check.py [--seed 0]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

RESULTS = Path("benchmarks/results")
METRICS = [
    "discrimination",
    "discrimination_all_genes",
    "pearson_delta_top100",
    "r2_mean_top100",
    "edistance",
    "mse_mean",
    "knn_auc",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import torch

    from rnadiff import datasets
    from rnadiff.data import _splits as splits
    from rnadiff.evaluation._benchmark import BenchConfig, rnadiff_predictions

    torch.set_num_threads(1)  # as a benchmark worker: the same numbers
    data = splits.papalexi_clean(datasets.load("papalexi2021"))
    split = next(splits.papalexi_seen(data, seed=args.seed))
    key, control = split.setup["perturbation_key"], split.setup["control"]
    preds, _, model = rnadiff_predictions(split, BenchConfig())
    parts = []
    for ev in split.evaluations:
        x = np.asarray(preds[ev.name]["rnadiff (counterfactual)"], dtype=np.float32)
        obs = pd.DataFrame(
            {key: [ev.name] * len(x)}, index=[f"{ev.name}_{i}" for i in range(len(x))]
        )
        parts.append(ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=list(model.genes))))
    pred = ad.concat(parts)
    real = ad.concat([ev.real for ev in split.evaluations] + [split.evaluations[0].control])
    for a in (pred, real):
        a.obs[key] = pd.Categorical(a.obs[key].astype(str))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pred.write_h5ad(tmp / "pred.h5ad")
        real.write_h5ad(tmp / "real.h5ad")
        cmd = [sys.executable, "-m", "rnadiff.cli", "evaluate", "--pred", str(tmp / "pred.h5ad")]
        cmd += ["--real", str(tmp / "real.h5ad"), "--by", key, "--seed", str(args.seed)]
        cmd += ["--control-where", f"{key}={control}", "--out", str(tmp / "per_ko.csv")]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        cli = pd.read_csv(tmp / "per_ko.csv", index_col=0)
    folds = pd.read_csv(RESULTS / "folds.csv")
    bench = folds[
        (folds.task == "papalexi_seen")
        & (folds.seed == args.seed)
        & (folds.method == "rnadiff (counterfactual)")
    ].pivot_table(index="evaluation", columns="metric", values="value")
    rows = [
        {
            "metric": m,
            "n_knockouts": len(bench),
            "max_abs_diff": float(np.abs(bench[m] - cli.loc[bench.index, m]).max()),
            "benchmark_mean": float(bench[m].mean()),
            "evaluate_mean": float(cli.loc[bench.index, m].mean()),
        }
        for m in METRICS
    ]
    table = pd.DataFrame(rows)
    table.to_csv(RESULTS / "evaluate_by_check.csv", index=False)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
