"""Mean and per-run tables of a rows_*.jsonl file: ``python show.py rows_sim_time.jsonl``."""

import sys

import pandas as pd

r = pd.read_json(sys.argv[1], lines=True)
# sim_time: the first runs (unnamed, then "per-gene shrinkage") counted no noise of the means
# for a condition's transport to itself; "two-sample" is the form adopted (module doc of
# rnadiff.conditioning._anchors); "none": unshrunk
own = "rnadiff (anchored, own transport without the means' noise)"
r["method"] = r.method.replace(
    {
        "rnadiff (anchored)": own,
        "rnadiff (anchored, per-gene shrinkage)": own,
        "rnadiff (anchored, two-sample)": "rnadiff (anchored, adopted)",
    }
)
runs = ["drug", "seed"] if "drug" in r else ["seed"]
metrics = ["pearson_delta_top100", "r2_mean_top100", "edistance", "r2_mean_all"]
m = r[r.metric.isin(metrics)]
print(m.pivot_table(index="method", columns="metric", values="value").round(3).to_string())
print(m.pivot_table(index="method", columns=["metric", *runs], values="value").round(3).T)
