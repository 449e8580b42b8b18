"""Tables of the ensemble study (``inner.py``'s rows) -> ``summary.md`` beside this file.

.venv/bin/python benchmarks/results/studies/ensemble/analyze.py
"""

from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
METRICS = ["pearson_delta_top100", "r2_mean_top100", "edistance"]


def gains(table: pd.DataFrame, new: str, old: str, metrics: list[str]) -> list[str]:
    """One line per metric: mean difference (positive: ``new`` better) and cases better."""
    lines = []
    for m in metrics:
        d = table[m][new] - table[m][old]
        d = -d if m == "edistance" else d
        lines.append(
            f"| {m} | {table[m][old].mean():.4f} | {table[m][new].mean():.4f} | "
            f"{d.mean():+.4f} | {(d > 0).sum()} of {len(d)} |"
        )
    return lines


def main() -> None:
    out = ["# Ensemble study: tables", ""]
    joint = pd.read_csv(HERE / "rows_joint.csv")
    head = "| metric | default | n_models=3 | gain | better in |\n|---|---|---|---|---|"
    for data, rows in joint.groupby(joint.outer.where(joint.outer.isin(["papalexi", "simdose"]),
                                                      "kang")):  # fmt: skip
        table = rows.pivot_table(index=["outer", "inner", "seed"], columns="model", values=METRICS)
        out += [f"## {data}: one model with n_models=3 against the default", "", head]
        out += [*gains(table, "joint 3", "default", METRICS), ""]
    pooled = pd.read_csv(HERE / "rows.csv")
    pooled["kind"] = pooled.model.str.split().str[0]
    means = pooled.groupby(["outer", "inner", "kind"])[METRICS[:2]].mean().unstack("kind")
    out += ["## kang: three separately trained models, cells pooled, against their mean", ""]
    out += [
        "| metric | one model (mean of 3) | pooled | gain | better in |",
        "|---|---|---|---|---|",
    ]
    out += [*gains(means, "pooled", "single", METRICS[:2]), ""]
    (HERE / "summary.md").write_text("\n".join(out))
    print("\n".join(out))


if __name__ == "__main__":
    main()
