"""Library sizes of a condition measured elsewhere: which transfer rule? (no training needed)

For every (context, perturbation) held out in turn, the library-size quantiles of the other
conditions are fitted as ``rnadiff.model._counts.LibrarySizes`` does; the held-out
condition's distribution is built from its context's control by each rule, drawn (as many
cells as are real, 5 draws) and compared with the real totals by the KS statistic.

Rules (q: quantile function of log library size, c: control, p: perturbed, over the contexts
where both are measured):
- shift (rnadiff up to 2026-12-07): q_c(held context) + mean_k [mean q_p(k) - mean q_c(k)]
- quantile: q_c(held context) + mean_k [q_p(k) - q_c(k)] quantile by quantile
- scale: location and scale in log depth: the control's quantiles standardised, times the
  mean sd ratio sd_p(k)/sd_c(k), plus the mean shift
- oracle: the held-out condition's own quantiles (the floor: draws from the truth)
- control: the context's control unchanged

Run: .venv/bin/python benchmarks/results/studies/library_transfer/run.py
"""

import sys

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

from rnadiff import datasets
from rnadiff.model._counts import N_QUANTILES, _levels, _quantiles

U = np.linspace(0, 1, N_QUANTILES)


def rules(q: dict, held: tuple) -> dict:
    ctx, pert = held
    qc = q[(ctx, "ctrl")]
    others = [k for (k, p) in q if p == pert and k != ctx and (k, "ctrl") in q]
    d = np.array([q[(k, pert)] - q[(k, "ctrl")] for k in others])
    sd_ratio = np.exp(np.mean([np.log(q[(k, pert)].std() / q[(k, "ctrl")].std()) for k in others]))
    return {
        "control": qc,
        "shift": qc + d.mean(),
        "quantile": qc + d.mean(0),
        "scale": (qc - qc.mean()) * sd_ratio + qc.mean() + d.mean(),
    }


def study(name, log_d, ctx, pert, control, min_cells=30):
    df = pd.DataFrame({"ctx": ctx, "pert": pert, "l": log_d})
    df["pert"] = np.where(df["pert"] == control, "ctrl", df["pert"])
    groups = {k: g["l"].to_numpy() for k, g in df.groupby(["ctx", "pert"], observed=True)}
    out = []
    for held, real in groups.items():
        if held[1] == "ctrl" or len(real) < min_cells:
            continue
        q = {k: _quantiles(v) for k, v in groups.items() if k != held}
        if (held[0], "ctrl") not in q or not any(p == held[1] and k != held[0] for k, p in q):
            continue
        built = rules(q, held) | {"oracle": _quantiles(real)}
        for rule, qf in built.items():
            ks = []
            for s in range(5):
                u = np.random.default_rng([s, 29]).uniform(size=len(real))
                ks.append(ks_2samp(np.maximum(np.round(_levels(u, qf)), 1), np.exp(real)).statistic)
            out.append(
                dict(data=name, held=f"{held[0]}/{held[1]}", n=len(real), rule=rule, ks=np.mean(ks))
            )
    return pd.DataFrame(out)


def totals(a):
    return np.log(np.asarray(a.X.sum(1)).ravel().astype(float))


frames = []
a = datasets.load("kang2018_ifnb")
frames.append(
    study(
        "kang (benchmark folds)",
        totals(a),
        a.obs.cluster_id.astype(str).values,
        a.obs.group_id.astype(str).values,
        "ctrl",
    )
)
p = datasets.load("papalexi2021")
p = p[(p.obs["top_grna_frac"] > 0.8).to_numpy()]
frames.append(
    study(
        "papalexi (context = replicate)",
        totals(p),
        p.obs.bio_rep.astype(str).values,
        p.obs.top_grna_target.astype(str).values,
        "non-targeting",
    )
)
for seed in range(3):
    s, _ = datasets.simulate(12000, seed=seed, n_genes=500)
    frames.append(
        study(
            f"simulator seed {seed}",
            totals(s),
            s.obs.cell_type.astype(str).values,
            s.obs.perturbation.astype(str).values + "@" + s.obs.dose.astype(str).values,
            "control@0.0",
        )
    )
res = pd.concat(frames)
res.to_csv(sys.argv[1] if len(sys.argv) > 1 else "library_transfer.csv", index=False)
tab = res.pivot_table(index="data", columns="rule", values="ks", aggfunc="mean")
print(tab.round(3).to_string())
wide = res.pivot_table(index=["data", "held"], columns="rule", values="ks")
for r in ("quantile", "scale"):
    print(
        r,
        "better than shift:",
        (wide[r] < wide["shift"]).groupby(level=0).mean().round(2).to_dict(),
    )
