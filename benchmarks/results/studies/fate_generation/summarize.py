"""Total variation between each generated / predicted composition and the real one at the same
time (``compositions.csv`` from ``diag.py``), mean over the drugs; table to ``summary.md``."""

from pathlib import Path

import pandas as pd

here = Path(__file__).parent
t = pd.read_csv(here / "compositions.csv")
states = [c for c in t.columns if c not in ("seed", "steps", "drug", "cells")]
rows = []
for (seed, steps, _drug), g in t.groupby(["seed", "steps", "drug"]):
    real = {r.cells.split()[1]: r for r in g.itertuples() if r.cells.startswith("real")}
    for r in g.itertuples():
        if r.cells.startswith("real"):
            continue
        hours = r.cells.split()[1]
        truth = real[hours]
        tv = 0.5 * sum(abs(getattr(r, s) - getattr(truth, s)) for s in states)
        rows.append({"seed": seed, "steps": steps, "cells": r.cells, "error": tv})
d = pd.DataFrame(rows)
# the baselines of sim_fate at 48 h: the drug's 24 h composition and the mean of 24 and 72 h
for (seed, steps, _drug), g in t.groupby(["seed", "steps", "drug"]):
    real = {r.cells: r for r in g.itertuples() if r.cells.startswith("real")}
    r48, r24, r72 = real["real 48 h"], real["real 24 h"], real["real 72 h"]
    for name, comp in (
        ("baseline: nearest time (24 h), at 48 h", {s: getattr(r24, s) for s in states}),
        ("baseline: linear in time, at 48 h",
         {s: (getattr(r24, s) + getattr(r72, s)) / 2 for s in states}),
    ):  # fmt: skip
        tv = 0.5 * sum(abs(comp[s] - getattr(r48, s)) for s in states)
        d.loc[len(d)] = {"seed": seed, "steps": steps, "cells": name, "error": tv}
table = d.groupby(["seed", "steps", "cells"]).error.mean().round(3).unstack(["seed", "steps"])
header = " | ".join(f"seed {s}, {n} steps" for s, n in table.columns)
lines = [f"| cells | {header} |", "|---" * (len(table.columns) + 1) + "|"]
lines += [
    f"| {name} | " + " | ".join("" if pd.isna(v) else f"{v:.3f}" for v in row) + " |"
    for name, row in table.iterrows()
]
(here / "summary.md").write_text(
    "Composition error (total variation vs the real cells at the same time; mean over the 4 "
    "drugs)\n\n" + "\n".join(lines) + "\n"
)
print(table.to_string())
