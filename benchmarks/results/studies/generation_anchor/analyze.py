"""Summarize ``rows.jsonl``: per task, each metric for anchored and network generation, and
the paired difference (anchored - network; mean ± SE, how often anchored is better)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd

rows = pd.DataFrame(
    [json.loads(x) for x in Path(__file__).with_name("rows.jsonl").read_text().splitlines()]
)
LOWER = {"edistance", "mmd", "knn_auc", "mse_top100", "mse_top20"}
METRICS = ["pearson_delta_top100", "r2_top100", "edistance", "knn_auc", "zero_fraction"]
for task, t in rows.groupby("task"):
    print(f"\n## {task} (seeds {sorted(t.seed.unique())}, {t.evaluation.nunique()} conditions)")
    real = t[(t.method == "real") & (t.metric == "zero_fraction")].value.mean()
    print(f"real zero fraction {real:.3f}")
    for metric in [m for m in METRICS if m in set(t.metric)]:
        w = t[t.metric == metric].pivot_table(
            index=["seed", "evaluation"], columns="method", values="value"
        )
        a, b = w["generation [anchor]"], w["generation [network]"]
        d = a - b
        better = (d < 0).sum() if metric in LOWER else (d > 0).sum()
        print(
            f"  {metric:22s} anchored {a.mean():.3f}  network {b.mean():.3f}  "
            f"paired {d.mean():+.3f} ± {d.std(ddof=1) / np.sqrt(len(d)):.3f} "
            f"(anchored better in {better} of {len(d)})"
        )
