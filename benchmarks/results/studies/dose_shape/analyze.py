"""Summarize ``rows.jsonl``: mean per task, fold and method (Pearson delta top-50, R² top-50,
R² all), and projected - current paired over held-out conditions (mean ± SE, wins)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd

pd.set_option("display.width", 200)
rows = pd.DataFrame(
    [json.loads(x) for x in Path(__file__).with_name("rows.jsonl").read_text().splitlines()]
)
metrics = ["pearson_delta_top50", "r2_mean_top50", "r2_mean_all"]
rows = rows[rows.metric.isin(metrics)]
for (task, fold), t in rows.groupby(["task", "fold"]):
    n = t.groupby(["seed", "evaluation"]).ngroups
    print(f"\n## {task}, {fold} (seeds {sorted(t.seed.unique())}, {n} conditions)\n")
    print(t.pivot_table(index="method", columns="metric", values="value")[metrics].round(3))
    for metric in metrics:
        w = t[t.metric == metric].pivot_table(
            index=["seed", "evaluation"], columns="method", values="value"
        )
        if "rnadiff (unshrunk)" not in w:
            continue
        for var in ("rnadiff (projected)", "rnadiff (unshrunk)"):
            for ref in ("rnadiff (current)", "baseline: nearest measured dose",
                    "baseline: linear in log dose"):  # fmt: skip
                d = (w[var] - w[ref]).dropna()
                print(
                    f"  {metric:20s} {var[8:-1]} - {ref:32s} {d.mean():+.4f} ± "
                    f"{d.std(ddof=1) / np.sqrt(len(d)):.4f} ({(d > 0).sum()} of {len(d)})"
                )
