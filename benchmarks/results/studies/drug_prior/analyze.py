"""Output-space blends of the saved inner-split vectors (``inner.py``): each held-out drug's
mean change predicted as ``t x A + (1 - t) x average`` with A the network's projection
(``projection``) or the measured Tanimoto-kernel mix of seen drugs (``kernel``), t on a grid
and t fitted (``fit_structure_trust``). Pearson delta top-50 and R² top-50 of the mean change,
as the benchmark scores means; table to ``blends.csv``."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd

here = Path(__file__).parent
rows = []
for f in sorted(here.glob("vectors_*.npz")):
    which, seed = f.stem.split("_")[1:]
    z = np.load(f)
    trust = float(z["trust"])
    evs = sorted({k.split("|")[0] for k in z.files if "|" in k})
    for ev in evs:
        v = {k.split("|")[1]: z[k] for k in z.files if k.startswith(ev + "|")}
        real = (v["control"] + v["real"])[None]
        control = v["control"][None]
        cands = {
            "average": v["average"],
            "kernel (measured)": v["kernel"],
            "projection": v["projection"],
            "kernel (network)": v["kernel_net"],
        }
        for t in (0.2, 0.4, 0.5, 0.6, 0.8):
            cands[f"proj x {t} + average"] = t * v["projection"] + (1 - t) * v["average"]
            cands[f"kernel x {t} + average"] = t * v["kernel"] + (1 - t) * v["average"]
        cands["proj x fitted + average"] = trust * v["projection"] + (1 - trust) * v["average"]
        cands["kernel x fitted + average"] = trust * v["kernel"] + (1 - trust) * v["average"]
        top = v["top"]
        r, c = v["real"][top], v["control"][top]
        for name, d in cands.items():
            p = d[top]
            rows.append(dict(
                data=which, seed=int(seed), ev=ev, method=name,
                pd50=float(np.corrcoef(p, r)[0, 1]),
                r2_50=float(1 - ((r - p) ** 2).sum() / ((r + c - (r + c).mean()) ** 2).sum()),
            ))  # fmt: skip
d = pd.DataFrame(rows)
table = d.groupby(["data", "method"])[["pd50", "r2_50"]].mean().round(3).unstack("data")
table.to_csv(here / "blends.csv")
pd.set_option("display.width", 200)
print(table.to_string())
if len(sys.argv) > 1:
    print(d.groupby(["data", "seed", "method"]).pd50.mean().unstack("seed").round(3))
