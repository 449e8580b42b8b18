"""Tables of ``nested.py``'s rows -> ``summary.md`` beside this file.

.venv/bin/python benchmarks/results/studies/context_profiles/analyze.py
"""

from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
METRICS = ["pearson_delta_top100", "r2_mean_top100", "edistance"]


def main() -> None:
    rows = pd.read_csv(HERE / "rows.csv")
    out = ["# Context profiles for `compose`: data against network", ""]
    for level, part in rows.groupby("level", sort=False):
        table = part.pivot_table(index=["outer", "fold", "seed"], columns="rule", values=METRICS)
        out += [f"## {level} folds ({len(table)} fold x seed)", ""]
        out += ["| metric | network | data | gain | data better / equal / worse |"]
        out += ["|---|---|---|---|---|"]
        for m in METRICS:
            d = table[m]["data"] - table[m]["network"]
            d = -d if m == "edistance" else d
            tie = (d.abs() < 1e-9).sum()
            out.append(
                f"| {m} | {table[m]['network'].mean():.4f} | {table[m]['data'].mean():.4f} | "
                f"{d.mean():+.4f} | {(d > 1e-9).sum()} / {tie} / {(d < -1e-9).sum()} |"
            )
        out.append("")
        if level == "outer":
            folds = part.groupby(["fold", "rule"])[METRICS].mean()
            out += ["Per outer fold (mean over seeds), network / data:", ""]
            out += ["| fold | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
            for fold in folds.index.get_level_values(0).unique():
                cells = [f"{folds.loc[(fold, 'network'), m]:.4f} / "
                         f"{folds.loc[(fold, 'data'), m]:.4f}" for m in METRICS]  # fmt: skip
                out.append(f"| {fold} | " + " | ".join(cells) + " |")
            out.append("")
    (HERE / "summary.md").write_text("\n".join(out))
    print("\n".join(out))


if __name__ == "__main__":
    main()
