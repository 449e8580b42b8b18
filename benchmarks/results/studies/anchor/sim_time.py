"""Time-course anchoring on a simulated time course the benchmark does not score: the cells of
one drug (1 uM) at 6 / 12 / 24 / 48 / 72 h in 2 cell types, no perturbation column (a time
course as HSMM is one); 24 h held out and predicted from each type's 12 h cells. rnadiff with
and without ``anchor``, and the benchmark's baselines. ``python sim_time.py SEED [DRUG]``;
rows to rows_sim_time.jsonl. ``python sim_time.py SEED DRUG VARIANT [N_CELLS]``: VARIANT
``default`` (also the network's own), ``none`` (unshrunk), ``wiener``, ``eb``, ``spike``
(``shrinkage.py``), ``noise2``, ``pcaK`` (the part on the top K principal axes whole: what was
adopted with K = 30) or any other name (the code as it is, e.g. ``built``, ``two-sample``);
N_CELLS: cells in all (default 6000, ~600 per condition). Rows written before the variants were
named call the first form ``rnadiff (anchored)`` (see show.py)."""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # benchmarks/
from run import bench_config

from rnadiff import RNADiffusion, datasets
from rnadiff.data._splits import Evaluation, Split
from rnadiff.evaluation._benchmark import baseline_predictions, prepare, score_split

seed = int(sys.argv[1])
drug = sys.argv[2] if len(sys.argv) > 2 else "Vorinostat"
variant = sys.argv[3] if len(sys.argv) > 3 else "per-gene shrinkage"
n_cells = int(sys.argv[4]) if len(sys.argv) > 4 else 6000  # ~n / 10 cells per condition
if variant in ("none", "wiener", "eb"):  # other shrinkage of the residuals
    import rnadiff.model._calibration as calibration

    def wiener(r, noise):  # each gene by r^2 / (r^2 + noise)
        return r * r * r / np.maximum(r * r + noise, 1e-300)

    def eb(r, noise):  # normal prior of one variance over genes: tau^2 / (tau^2 + noise)
        tau2 = max(0.0, float(np.mean(r * r - noise)))
        return r * tau2 / np.maximum(tau2 + noise, 1e-300)

    calibration.shrink = {"none": lambda r, noise: r, "wiener": wiener, "eb": eb}[variant]
elif variant == "noise2":  # the residual's noise without counting the source's spread twice
    import rnadiff.model._calibration as calibration

    def residual_noise(within, n_target, n_source, pred, own):
        m = len(own)
        extra = within * max(0.0, 1 / m - 1 / n_source)  # the drawn cells' mean vs all
        return within / n_target + pred.var(0, ddof=1) / m + extra

    calibration.residual_noise = residual_noise
elif variant.startswith("pca"):  # the part of r on the cells' top principal axes unshrunk
    import rnadiff.model._calibration as calibration
    from rnadiff.conditioning._anchors import shrink as per_gene

    AXES: list = []  # filled once the training cells are known (below)

    def pooled(r, noise):
        v = AXES[0]
        coherent = v @ (v.T @ r)
        return coherent + per_gene(r - coherent, noise)

    calibration.shrink = pooled
elif variant == "spike":
    import rnadiff.model._calibration as calibration

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from shrinkage import spike_slab

    calibration.shrink = spike_slab
adata, _ = datasets.simulate(
    n_cells, seed=seed, n_genes=500, n_cell_types=2, n_genetic=0, drugs=(drug,),
    n_combinations=0, doses=(1.0,), times=(6.0, 12.0, 24.0, 48.0, 72.0), control_weight=0.01,
)  # fmt: skip
adata = adata[(adata.obs.perturbation == drug).to_numpy()].copy()
adata.obs = adata.obs[["cell_type", "time"]].copy()
held = (adata.obs.time == 24.0).to_numpy()
evaluations = []
for ct in sorted(set(adata.obs.cell_type)):
    here = (adata.obs.cell_type == ct).to_numpy()
    source = adata[here & (adata.obs.time == 12.0).to_numpy()]
    evaluations.append(
        Evaluation(
            ct, source, adata[here & held], source, {"time": 24.0}, {"time": 24.0, "cell_type": ct}
        )
    )
setup = {"time_key": "time", "categorical_keys": ["cell_type"]}
split = Split("sim_time", "24h", seed, adata[~held].copy(), setup, evaluations)
config = bench_config(None, None)
prep = prepare(split, config)
preds = baseline_predictions(split, prep)
for ev in evaluations:  # the source cells moved by the type's time means interpolated in time
    obs = split.train.obs
    mean = {t: prep.train[((obs.cell_type == ev.name) & (obs.time == t)).to_numpy()].mean(0)
            for t in (12.0, 48.0)}  # fmt: skip
    w = (24.0 - 12.0) / (48.0 - 12.0)
    shift = w * (mean[48.0] - mean[12.0])
    preds[ev.name] = {k: v for k, v in preds[ev.name].items() if "control" in k}
    preds[ev.name]["baseline: linear in time"] = np.maximum(
        prep.evaluations[ev.name]["source"] + shift, 0
    )
if variant.startswith("pca"):  # principal axes of the training cells (log expression)
    k = int(variant[3:] or 20)
    centred = prep.train - prep.train.mean(0)
    AXES.append(np.linalg.svd(centred, full_matrices=False)[2][:k].T)
train = split.train.copy()
RNADiffusion.setup_anndata(train, **setup)
model = RNADiffusion(train, config=config.model_config(), seed=seed)
model.train(config=config.train_config(seed), progress=False)
print(len(model.anchors or ()), "anchors")
genes = list(model.preprocess.all_genes)
for ev in evaluations:
    for anchor in (False, True) if variant == "default" else (True,):
        cf = model.predict(ev.source, target=ev.target, steps=config.sampler_steps, seed=seed,
                           progress=False, anchor=anchor)  # fmt: skip
        name = f"rnadiff (anchored, {variant})" if anchor else "rnadiff"
        preds[ev.name][name] = np.asarray(cf[:, genes].X)
rows = score_split(split, prep, preds, config)
with Path(__file__).with_name("rows_sim_time.jsonl").open("a") as f:
    for row in rows.to_dict("records"):
        f.write(
            json.dumps(row | {"seed": seed, "drug": drug, "n_cells": n_cells}, default=float) + "\n"
        )
