"""Tables of the mean-anchoring study: ``python summarize.py`` (rows_*.jsonl -> stdout)."""

import glob

import pandas as pd

pd.set_option("display.width", 200)
for f in sorted(set(glob.glob("rows_*.jsonl")) - {"rows_variants.jsonl", "rows_inner.jsonl"}):
    d = pd.read_json(f, lines=True)
    print(f"\n## {f}\n")
    t = d.groupby(["world", "fold", "method"])["pearson_delta_top50"].mean().unstack("method")
    print(t.round(3).to_string())

# the shrinkage variants (variants.py): one model per dataset, every variant from it
try:
    v = pd.read_json("rows_variants.jsonl", lines=True)
except ValueError:
    v = None
if v is not None:
    metrics = [m for m in ("pearson_delta_top50", "pearson_delta_top100", "r2_mean_top100",
                           "r2_mean_all", "edistance") if m in v]  # fmt: skip
    print("\n## rows_variants.jsonl (mean over evaluations; off = anchor=False)\n")
    long = v.melt(["dataset", "fold", "evaluation", "method"], metrics, "metric").dropna()
    t = long.groupby(["dataset", "fold", "metric", "method"]).value.mean().unstack("method")
    print(t.round(4).to_string())
