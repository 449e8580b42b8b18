"""Could the anchors' shrinkage be fitted from the data? Leave one measured dose out.

``python lodo.py lincs SEED`` / ``python lodo.py sim WORLD``: the training set of ``inner.py``
(LINCS without the outer held-out 0.37, 1.11 and 10 uM; the simulated world without 1 and
10 uM). After training, each anchor's raw residual ``r`` and noise ``v`` are recorded
(calibrate_means re-run with the shrinkage recorded); for every drug with >= 3 measured doses
and each of its doses ``k``, the residual at ``k`` is predicted from the other doses' residuals
as ``predict`` would (linear in log dose between the two around it, the nearest beyond), each
shrunk with ``lambda x v``; printed: the mean squared error against ``r_k`` over all genes
and over the 50 genes of largest measured change, per ``lambda``. No model change."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # benchmarks/
import _drug_tasks as dt
from _studies import bench_config

import rnadiff.model._calibration as cal
from rnadiff.conditioning._anchors import shrink

which, seed = sys.argv[1], int(sys.argv[2])
config = bench_config({})
if which == "lincs":
    adata = dt._lincs()
    adata = adata[~adata.obs["pert_dose"].isin([0.37, 1.11, 10.0]).to_numpy()].copy()
    model, _ = dt._train(adata, dt._lincs_setup(), config, seed, input_type="log2")
else:
    adata, _ = dt.sim_dose_world(seed)
    held = (adata.obs.perturbation != "control").to_numpy() & adata.obs.dose.isin([1.0, 10.0])
    model, _ = dt._train(adata[~held.to_numpy()], dt._sim_setup(), config, seed)
record = []


def recording(r, noise):
    out = shrink(r, noise)
    record.append((out, r, noise))
    return out


cal.shrink = recording
model.calibrate_means(n_cells=64, seed=seed, progress=False)
a = model.anchors
raw, var = np.zeros_like(a.residuals, dtype=np.float64), np.zeros_like(a.residuals, dtype=float)
for i in range(len(a)):
    j = next(
        k
        for k, (out, _, _) in enumerate(record)
        if np.array_equal(out.astype(np.float32), a.residuals[i])
    )
    raw[i], var[i] = record[j][1], record[j][2]
reg = model.registry
cats = [c.key for c in reg.covariates if c.categorical]
ip = cats.index(reg.perturbation_key)
ctrl_of = {tuple(r[:ip] + r[ip + 1 :]): i for i, r in enumerate(a.rows) if r[ip] == reg.control}
groups = {}
for i, row in enumerate(a.rows):
    groups.setdefault(tuple(row), []).append(i)
lambdas = [0.0, 0.1, 0.25, 0.5, 1.0, 2.0]
err_all = {lam: [] for lam in lambdas}
err_top = {lam: [] for lam in lambdas}
for row, idx in groups.items():
    doses = np.log(a.values[idx, 0])
    if len(idx) < 3 or not np.isfinite(doses).all():
        continue
    for k in range(len(idx)):
        others = [m for m in range(len(idx)) if m != k]
        d = doses[others]
        order = np.argsort(d)
        d, others = d[order], [others[o] for o in order]
        x = doses[k]
        if x <= d[0] or x >= d[-1]:
            w = {others[0] if x <= d[0] else others[-1]: 1.0}
        else:
            h = int(np.searchsorted(d, x))
            t = (x - d[h - 1]) / (d[h] - d[h - 1])
            w = {others[h - 1]: 1 - t, others[h]: t}
        target = raw[idx[k]]
        c = ctrl_of[tuple(row[:ip] + row[ip + 1 :])]
        change = a.means[idx[k]] + raw[idx[k]] - a.means[c] - raw[c]
        top = np.argsort(-np.abs(change))[:50]
        for lam in lambdas:
            guess = sum(wt * shrink(raw[idx[m]], lam * var[idx[m]]) for m, wt in w.items())
            err_all[lam].append(np.mean((guess - target) ** 2))
            err_top[lam].append(np.mean((guess - target)[top] ** 2))
print(which, seed, "held-out doses:", len(err_all[1.0]))
for lam in lambdas:
    print(
        f"  lambda {lam:4.2f}: mse all genes {np.mean(err_all[lam]):.6f}  "
        f"top-50 {np.mean(err_top[lam]):.6f}"
    )
