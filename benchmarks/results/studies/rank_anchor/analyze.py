"""Summarize ``rows.jsonl``: mean rank metrics per task and method over the inner targets,
and the paired difference anchor - network for each rnadiff score (mean ± SE)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd

rows = pd.DataFrame(
    [json.loads(line) for line in Path(__file__).with_name("rows.jsonl").read_text().splitlines()]
)
rows = rows.drop_duplicates(["task", "outer_seed", "evaluation", "method", "metric"], keep="last")
for task, t in rows.groupby("task"):
    metrics = [m for m in ("mrr", "top1", "top5", "rank") if m in set(t.metric)]
    table = t[t.metric.isin(metrics)].pivot_table(
        index="method", columns="metric", values="value", aggfunc="mean"
    )[metrics]
    seeds = sorted(t.outer_seed.unique())
    n = t[t.metric == metrics[-1]].groupby("method").size().max()
    print(f"\n## {task} (outer seeds {seeds}, {n} targets)\n")
    print(table.round(3).to_string())
    for score in ("combined", "generation", "likelihood"):
        for metric in [m for m in ("mrr", "rank") if m in metrics]:
            a = t[(t.method == f"rnadiff ({score}) [anchor]") & (t.metric == metric)]
            b = t[(t.method == f"rnadiff ({score}) [network]") & (t.metric == metric)]
            m = a.merge(b, on=["outer_seed", "evaluation"], suffixes=("_a", "_b"))
            d = m.value_a - m.value_b
            if len(d):
                print(
                    f"  {score:10s} {metric}: anchor - network {d.mean():+.3f} ± "
                    f"{d.std(ddof=1) / np.sqrt(len(d)):.3f} (n {len(d)})"
                )
