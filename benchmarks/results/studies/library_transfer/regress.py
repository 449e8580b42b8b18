"""Library size from the expression profile: a ridge regression of log library size on the
log-normalised profile (fitted on the other conditions' cells), applied to the held-out
cells' own profiles (a proxy for well generated ones), plus residuals drawn from the
training residuals of the context's control cells. KS against the real totals."""

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import ks_2samp
from sklearn.decomposition import PCA
from sklearn.linear_model import RidgeCV

from rnadiff import datasets


def lognorm(X):
    X = sp.csr_matrix(X, dtype=np.float64)
    t = np.asarray(X.sum(1)).ravel()
    Y = sp.diags(1e4 / t) @ X
    Y.data = np.log1p(Y.data)
    return Y.toarray(), np.log(t)


def study(name, X, ctx, pert, control, min_cells=30):
    Y, logl = lognorm(X)
    pert = np.where(pert == control, "ctrl", pert)
    keys = pd.Series(list(zip(ctx, pert, strict=True)))
    out = []
    for held in keys.unique():
        if held[1] == "ctrl":
            continue
        h = (keys == held).to_numpy()
        if h.sum() < min_cells:
            continue
        if not ((keys.str[1] == held[1]) & ~h).any():
            continue
        pca = PCA(50, random_state=0).fit(Y[~h])
        Z = pca.transform(Y)
        reg = RidgeCV(alphas=np.logspace(-2, 3, 11)).fit(Z[~h], logl[~h])
        resid = logl[~h] - reg.predict(Z[~h])
        ctrl = ((keys.str[0] == held[0]) & (keys.str[1] == "ctrl")).to_numpy()[~h]
        pred = reg.predict(Z[h])
        ks = {}
        for which, r in (("all residuals", resid), ("control residuals", resid[ctrl])):
            vals = []
            for s in range(5):
                rng = np.random.default_rng(s)
                draw = pred + rng.choice(r, size=h.sum())
                vals.append(ks_2samp(np.round(np.exp(draw)), np.exp(logl[h])).statistic)
            ks[which] = np.mean(vals)
        out.append(
            dict(
                data=name,
                held=f"{held[0]}/{held[1]}",
                n=int(h.sum()),
                r2=reg.score(Z[~h], logl[~h]),
                **ks,
            )
        )
    return pd.DataFrame(out)


frames = []
a = datasets.load("kang2018_ifnb")
frames.append(
    study(
        "kang", a.X, a.obs.cluster_id.astype(str).values, a.obs.group_id.astype(str).values, "ctrl"
    )
)
p = datasets.load("papalexi2021")
p = p[(p.obs["top_grna_frac"] > 0.8).to_numpy()]
frames.append(
    study(
        "papalexi",
        p.X,
        p.obs.bio_rep.astype(str).values,
        p.obs.top_grna_target.astype(str).values,
        "non-targeting",
    )
)
for seed in range(2):
    s, _ = datasets.simulate(12000, seed=seed, n_genes=500)
    frames.append(
        study(
            f"sim {seed}",
            s.X,
            s.obs.cell_type.astype(str).values,
            (s.obs.perturbation.astype(str) + "@" + s.obs.dose.astype(str)).values,
            "control@0.0",
        )
    )
res = pd.concat(frames)
res.to_csv("regress.csv", index=False)
print(res.groupby("data")[["r2", "all residuals", "control residuals"]].mean().round(3))
