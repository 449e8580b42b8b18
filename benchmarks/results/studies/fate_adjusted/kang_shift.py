"""Adjusted classify-and-count on real cells without a model (data the fate benchmark does not
score): a cell-type classifier (rnadiff.fate.StateClassifier, the default logistic) fitted on
reference cells, then the composition of other cells counted with and without the confusion
adjustment, against their true cell types.

- kang_ifnb: fitted on the control cells, applied to the IFN-beta stimulated cells (a real
  shift of expression) and to 20 resamples of them with random (Dirichlet) compositions.
- kang_ctrl: fitted on 400 random cells of the 12k control file, applied to 20 resamples of
  the other cells with random compositions (200 cells each).

Run: RNADIFF_DATA_DIR=../shared/data .venv/bin/python \
       benchmarks/results/studies/fate_adjusted/kang_shift.py
"""

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from rnadiff import datasets
from rnadiff.fate import StateClassifier, composition, composition_error


def lognorm(a):
    x = a.X.toarray() if sp.issparse(a.X) else np.asarray(a.X, dtype=float)
    return np.log1p(x / x.sum(1, keepdims=True).clip(1) * 1e4)


def resamples(labels, states, rng, n, size):
    """Index sets of ``size`` cells with Dirichlet-drawn compositions."""
    out = []
    for _ in range(n):
        p = rng.dirichlet(np.ones(len(states)))
        want = rng.choice(len(states), size=size, p=p)
        idx = []
        for k, s in enumerate(states):
            pool = np.flatnonzero(labels == s)
            m = int((want == k).sum())
            if m and len(pool):
                idx += list(rng.choice(pool, size=m, replace=True))
        out.append(np.asarray(idx))
    return out


def score(name, clf, x, labels, sets):
    rows = []
    pred = clf.predict(x)
    for i, idx in enumerate(sets):
        truth = composition(labels[idx], clf.states_, n_boot=0)
        for adjusted in (False, True):
            comp = composition(
                pred[idx], clf.states_, n_boot=0, confusion=clf.confusion_ if adjusted else None
            )
            rows.append(dict(data=name, sample=i, adjusted=adjusted,
                             error=composition_error(comp, truth)))  # fmt: skip
    return rows


rng = np.random.default_rng(0)
rows = []
a = datasets.load("kang2018_ifnb")
labels = a.obs["cluster_id"].astype(str).to_numpy()
ctrl = (a.obs["group_id"] == "ctrl").to_numpy()
x = lognorm(a)
clf = StateClassifier(seed=0).fit(x[ctrl], labels[ctrl])
stim = np.flatnonzero(~ctrl)
sets = [stim] + [stim[i] for i in resamples(labels[stim], clf.states_, rng, 20, 200)]
rows += score("kang_ifnb (ctrl -> stim)", clf, x, labels, sets)
b = datasets.load("kang2018_ctrl")
labels_b = b.obs["cluster_id"].astype(str).to_numpy()
keep = pd.Series(labels_b).map(pd.Series(labels_b).value_counts()).to_numpy() >= 50
xb, labels_b = lognorm(b[keep]), labels_b[keep]
ref = rng.choice(len(labels_b), size=400, replace=False)
rest = np.setdiff1d(np.arange(len(labels_b)), ref)
clf_b = StateClassifier(seed=0).fit(xb[ref], labels_b[ref])
sets = [rest[i] for i in resamples(labels_b[rest], clf_b.states_, rng, 20, 200)]
rows += score("kang_ctrl (400 reference cells)", clf_b, xb, labels_b, sets)
out = pd.DataFrame(rows)
summary = out.groupby(["data", "adjusted"]).error.agg(["mean", "sem", "count"])
wins = out.pivot_table(index=["data", "sample"], columns="adjusted", values="error")
summary["adjusted better in"] = (
    (wins[True] < wins[False])
    .groupby("data")
    .sum()
    .reindex(summary.index.get_level_values(0))
    .to_numpy()
)
print(f"cv accuracy: kang_ifnb {clf.cv_accuracy_:.3f}, kang_ctrl {clf_b.cv_accuracy_:.3f}")
print(summary.round(4).to_string())
here = Path(__file__).parent
out.to_csv(here / "kang_shift.csv", index=False)
