"""Would anchoring help a time course without a perturbation column? HSMM inner split
(unscored: 24 h held out of the 0 / 24 / 72 h training cells, predicted from 0 h). Post hoc, the
prediction 0 h -> 24 h takes the residuals of the measured transports from 0 h (to 0 h: the
reconstruction; to 72 h) interpolated linearly in time, each gene shrunk by its sampling noise
as `calibrate_means` does: r(0 -> t) = [mean x(t) - mean x(0)] - mean_i [x_hat_i(t) - x_i].
``python hsmm_inner.py SEED [none|wiener]``; rows to rows_hsmm_inner.jsonl (``none``: unshrunk;
``wiener``: each gene by r^2 / (r^2 + noise))."""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # benchmarks/
sys.path.append(str(Path(__file__).resolve().parent))  # shrinkage.py
from _tasks import task_splits
from run import bench_config

from rnadiff import RNADiffusion
from rnadiff.conditioning._anchors import anchor_cells, shrink
from rnadiff.evaluation._benchmark import baseline_predictions, prepare, score_split

seed = int(sys.argv[1])
variant = sys.argv[2] if len(sys.argv) > 2 else ""  # "none" / "wiener" (2026-12-07 pm)
if variant == "none":

    def shrink(r, noise):
        return r

elif variant == "spike":
    from shrinkage import spike_slab as shrink
elif variant == "wiener":

    def shrink(r, noise):  # each gene by r^2 / (r^2 + noise)
        return r * r * r / np.maximum(r * r + noise, 1e-300)


config = bench_config(None, None)
(split,) = task_splits("hsmm_inner", seed)
(ev,) = split.evaluations
prep = prepare(split, config)
preds = baseline_predictions(split, prep)
train = split.train.copy()
RNADiffusion.setup_anndata(train, **split.setup)
model = RNADiffusion(train, config=config.model_config(), seed=seed)
model.train(config=config.train_config(seed), progress=False)
if variant.startswith("pca"):  # the part of r on the cells' top principal axes unshrunk
    from rnadiff.conditioning._anchors import shrink as per_gene

    cols = pd.Index(prep.genes).get_indexer(list(model.genes))
    centred = prep.train[:, cols] - prep.train[:, cols].mean(0)
    axes = np.linalg.svd(centred, full_matrices=False)[2][: int(variant[3:] or 20)].T

    def shrink(r, noise):
        coherent = axes @ (axes.T @ r)
        return coherent + per_gene(r - coherent, noise)


key = split.setup["time_key"]
times = train.obs[key].to_numpy(float)
source_t = float(ev.source.obs[key].iloc[0])
target_t = float(ev.target[key])
kw = dict(steps=config.sampler_steps, seed=seed, progress=False, spread=False)
src = train[times == source_t]
own = model.log_expression(src).astype(np.float64)
x_src = own.mean(0)
residual, reference = {}, {}
for t in sorted(set(times)):
    if t == target_t:
        continue
    pred = model.predict(src, target={key: t}, **kw)[:, model.genes].X.astype(np.float64)
    change = pred - own
    real = model.log_expression(train[times == t]).astype(np.float64)
    r = real.mean(0) - x_src - change.mean(0)
    noise = real.var(0, ddof=1) / len(real) + own.var(0, ddof=1) / len(own)
    noise = noise + change.var(0, ddof=1) / len(own)
    if variant == "noise2":  # the source's spread counted once (all source cells drawn)
        noise = real.var(0, ddof=1) / len(real) + pred.var(0, ddof=1) / len(own)
    residual[t], reference[t] = shrink(r, noise), pred.mean(0)
lo = max(t for t in residual if t < target_t)
hi = min(t for t in residual if t > target_t)
w = (target_t - lo) / (hi - lo)
shift = (1 - w) * residual[lo] + w * residual[hi]
ref = (1 - w) * reference[lo] + w * reference[hi]
cf = model.predict(ev.source, target=ev.target, steps=config.sampler_steps, seed=seed,
                   progress=False)  # fmt: skip
genes = list(model.preprocess.all_genes)
modelled = np.isin(genes, list(model.genes))
x = cf[:, model.genes].X
n = len(x)
anchored = anchor_cells(x, np.tile(shift, (n, 1)), np.tile(ref, (n, 1)), np.ones(n, bool))
label = "rnadiff + interpolated transport residuals"
names = {"none": ", unshrunk", "wiener": ", Wiener factor", "spike": ", spike-and-slab"}
names |= {"noise2": ", source spread counted once", "pca10": ", top 10 axes unshrunk"}
label += (names | {"pca30": ", top 30 axes unshrunk"}).get(variant, "")
for name, values in (("rnadiff", x), (label, anchored)):
    full = cf[:, genes].X.copy()
    full[:, modelled] = values
    preds[ev.name][name] = full
rows = score_split(split, prep, preds, config)
with Path(__file__).with_name("rows_hsmm_inner.jsonl").open("a") as f:
    for row in rows.to_dict("records"):
        f.write(json.dumps(row | {"seed": seed}, default=float) + "\n")
print(f"seed {seed}: {source_t:g} h -> {target_t:g} h from {lo:g} / {hi:g} h, w {w:.2f}")
