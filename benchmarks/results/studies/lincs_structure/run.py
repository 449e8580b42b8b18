"""Does a drug's structure say anything about its effect on the LINCS plate? (issue 22)

A diagnostic of the data, not a choice of default: each drug's measured mean change from DMSO at
each dose (bulk wells, log2) is predicted from the *other* drugs' measured changes at that dose
(leave one drug out, all drugs with SMILES), by a blend of the Tanimoto-nearest drugs' changes
and the plain mean of all other drugs:

    pred = trust * sum_j w_j E_j + (1 - trust) * mean_j E_j,
    w = softmax(Tanimoto similarity / T) over the k most similar drugs,

(the form of ``rnadiff.conditioning.blend_prior``, with Tanimoto similarity in place of
co-expression). trust 0 is the "train mean" baseline, trust 1 with k = 1 the "nearest training
drug" baseline. Scored by Pearson delta on the top-50 genes of the true change, as the benchmark.
If no trust > 0 beats trust 0, no similarity-weighted use of the measured drugs, and so no model
that learns a drug's effect from its structure on these 47-59 drugs, is expected to beat the
train mean.

Run (about 20 s; table to ``results.csv`` beside this script)::

    RNADIFF_DATA_DIR=../shared/data .venv/bin/python \
        benchmarks/results/studies/lincs_structure/run.py
"""

from pathlib import Path

import numpy as np
import pandas as pd

from rnadiff import datasets
from rnadiff.data._molecules import fingerprints, tanimoto

TRUSTS = (0.0, 0.3, 0.5, 0.7, 1.0)
KERNELS = ((1, 0.1), (3, 0.1), (10, 0.1))  # (k most similar, temperature)


def pearson_delta(pred: np.ndarray, true: np.ndarray, top: int = 50) -> float:
    genes = np.argsort(-np.abs(true))[:top]
    return float(np.corrcoef(pred[genes], true[genes])[0, 1])


a = datasets.load("lincs2014_a375_doses")
obs, x = a.obs, np.asarray(a.X, dtype=np.float64)
smiles = obs.groupby("pert_iname", observed=True)["smiles"].first()
smiles = smiles[~smiles.astype(str).isin(["nan", "", "None"])].astype(str)
names = [n for n in smiles.index if n != "DMSO"]
fp = fingerprints(smiles.to_dict(), names)
sim = np.array([[tanimoto(fp[i], fp[j]) for j in range(len(names))] for i in range(len(names))])
control = x[(obs["pert_iname"] == "DMSO").to_numpy()].mean(0)
rows = []
for dose in sorted(set(obs["pert_dose"]) - {0.0}):
    at = np.isclose(obs["pert_dose"], dose)
    effects = {}
    for i, name in enumerate(names):
        wells = ((obs["pert_iname"] == name).to_numpy()) & at
        if wells.any():
            effects[i] = x[wells].mean(0) - control
    for i, true in effects.items():
        others = [j for j in effects if j != i]
        base = np.mean([effects[j] for j in others], axis=0)
        for k, temperature in KERNELS:
            s = sim[i, others]
            top = np.argsort(-s)[:k]
            w = np.exp((s[top] - s[top].max()) / temperature)
            mix = sum(wj * effects[others[j]] for wj, j in zip(w / w.sum(), top, strict=True))
            for trust in TRUSTS:
                pred = trust * mix + (1 - trust) * base
                rows.append(dict(dose=dose, drug=names[i], k=k, trust=trust,
                                 pearson_delta_top50=pearson_delta(pred, true)))  # fmt: skip
res = pd.DataFrame(rows)
res.to_csv(Path(__file__).with_name("results.csv"), index=False)
table = res.pivot_table(index=["k", "trust"], columns="dose", values="pearson_delta_top50")
table["mean"] = table.mean(axis=1)
print(f"{len(names)} drugs with SMILES; leave-one-drug-out Pearson delta top-50 by dose (uM):")
print(table.round(3).to_string())
