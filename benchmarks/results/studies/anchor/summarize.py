"""Tables of the mean-anchoring study: ``python summarize.py`` (rows_*.jsonl -> stdout)."""

import glob

import pandas as pd

pd.set_option("display.width", 200)
for f in sorted(glob.glob("rows_*.jsonl")):
    d = pd.read_json(f, lines=True)
    print(f"\n## {f}\n")
    t = d.groupby(["world", "fold", "method"])["pearson_delta_top50"].mean().unstack("method")
    print(t.round(3).to_string())
