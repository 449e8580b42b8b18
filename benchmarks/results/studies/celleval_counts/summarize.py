"""Tables of ``celleval.csv`` and ``ours.csv`` (``run.py``), per task: means over folds and
seeds, and cell-eval's DES per fold and seed beside the additive baselines'."""

from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
NAMES = {  # cell-eval's names -> the challenge's (as the peers page reports them)
    "overlap_at_N": "DES",
    "discrimination_score_l1": "PDS",
    "mae": "MAE",
    "overlap_at_N_scaled": "DES scaled",
    "mae_scaled": "MAE scaled",
    "avg_score_scaled": "vcc_score",
    "pearson_delta": "pearson_delta",
}
OURS = ["de_overlap_top20", "de_overlap_top100", "pearson_delta_top100", "r2_mean_top100"]
OURS += ["edistance", "knn_auc", "discrimination"]


def means(frame: pd.DataFrame, metrics: list[str], by: str) -> pd.DataFrame:
    table = frame[frame.metric.isin(metrics)].pivot_table(
        index="method", columns="metric", values="value", aggfunc="mean"
    )
    return table[[m for m in metrics if m in table]].sort_values(by, ascending=False)


cells = pd.read_csv(HERE / "celleval.csv")
cells = cells[cells.metric.isin(NAMES)].assign(metric=lambda d: d.metric.map(NAMES))
ours = pd.read_csv(HERE / "ours.csv")
for task in sorted(set(cells.task)):
    mine, theirs = ours[ours.task == task], cells[cells.task == task]
    runs = theirs.groupby(["fold", "seed"]).ngroups
    print(f"## {task}: cell-eval, mean over {runs} folds x seeds")
    print(means(theirs, list(NAMES.values()), "vcc_score").round(3).to_string())
    print(f"\n## {task}: the benchmark's metrics")
    print(means(mine, OURS, "de_overlap_top20").round(3).to_string())
    des = theirs[theirs.metric == "DES"].pivot_table(
        index=["seed", "fold"], columns="method", values="value"
    )
    cols = [c for c in des if c.startswith("rnadiff (counterfactual") or "additive" in c]
    print(f"\n## {task}: DES per fold and seed")
    print(des[cols].round(3).to_string(), end="\n\n")
