"""Where the HSMM E-distance gap to the additive baseline comes from (diagnostic, unscored HSMM
inner split: 0 h -> 24 h, 72 h measured; as ``hsmm_inner.py``). In one PCA space (50 axes of the
real 0 h and 24 h cells, modelled genes), for rnadiff, rnadiff with the interpolated transport
residuals (per-gene shrinkage) and the additive baseline: the energy distance to the real 24 h
cells split into its terms, E = 2 C - W_pred - W_real (C: mean distance between a predicted and a
real cell; W: within a population), the distance between the two means, and the total variance
(sum over axes) of each population; and, post hoc, the anchored cells widened by the
transports' spread ratio (real over predicted total variance, interpolated in time).
``python spread_check.py SEED``."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # benchmarks/
from _tasks import task_splits
from run import bench_config
from scipy.spatial.distance import cdist

from rnadiff import RNADiffusion
from rnadiff.conditioning._anchors import anchor_cells, shrink
from rnadiff.evaluation._benchmark import baseline_predictions, prepare
from rnadiff.evaluation._distances import fit_pca, project

seed = int(sys.argv[1])
config = bench_config(None, None)
(split,) = task_splits("hsmm_inner", seed)
(ev,) = split.evaluations
prep = prepare(split, config)
baselines = baseline_predictions(split, prep)[ev.name]
train = split.train.copy()
RNADiffusion.setup_anndata(train, **split.setup)
model = RNADiffusion(train, config=config.model_config(), seed=seed)
model.train(config=config.train_config(seed), progress=False)
key = split.setup["time_key"]
times = train.obs[key].to_numpy(float)
source_t, target_t = float(ev.source.obs[key].iloc[0]), float(ev.target[key])
kw = dict(steps=config.sampler_steps, seed=seed, progress=False, spread=False)
src = train[times == source_t]
own = model.log_expression(src).astype(np.float64)
residual, reference, spread = {}, {}, {}
for t in sorted(set(times)):
    pred = model.predict(src, target={key: t}, **kw)[:, model.genes].X.astype(np.float64)
    real = model.log_expression(train[times == t]).astype(np.float64)
    r = real.mean(0) - own.mean(0) - (pred - own).mean(0)
    noise = real.var(0, ddof=1) / len(real) + own.var(0, ddof=1) / len(own)
    noise = noise + (pred - own).var(0, ddof=1) / len(own)
    residual[t], reference[t] = shrink(r, noise), pred.mean(0)
    spread[t] = np.sqrt(real.var(0).sum() / pred.var(0).sum())  # real over predicted, total
w = (target_t - source_t) / (max(residual) - source_t)
shift = (1 - w) * residual[source_t] + w * residual[max(residual)]
ref = (1 - w) * reference[source_t] + w * reference[max(residual)]
cf = model.predict(ev.source, target=ev.target, steps=config.sampler_steps, seed=seed,
                   progress=False)  # fmt: skip
x = np.asarray(cf[:, model.genes].X, dtype=np.float64)
n = len(x)
cols = pd.Index(prep.genes).get_indexer(list(model.genes))
methods = {
    "rnadiff": x,
    "rnadiff + transport residuals": anchor_cells(
        x, np.tile(shift, (n, 1)), np.tile(ref, (n, 1)), np.ones(n, bool)
    ),
    "baseline: additive": baselines["baseline: additive"][:, cols],
}
# post hoc: the anchored cells widened around their mean by the transports' spread ratio,
# interpolated in time as the residuals are
factor = (1 - w) * spread[source_t] + w * spread[max(residual)]
anchored = methods["rnadiff + transport residuals"]
centre = anchored.mean(0)
methods["rnadiff + transport residuals + spread"] = np.maximum(
    centre + factor * (anchored - centre), 0.0
)
print("spread ratios", {t: round(float(v), 3) for t, v in spread.items()}, "factor", factor)
real = prep.evaluations[ev.name]["real"][:, cols]
space = fit_pca(np.vstack([real, prep.evaluations[ev.name]["source"][:, cols]]), n_components=50)
zr = project(real, space)
rows = []
for name, pred in methods.items():
    zp = project(pred, space)
    c, wp, wr = cdist(zp, zr).mean(), cdist(zp, zp).mean(), cdist(zr, zr).mean()
    rows.append(dict(seed=seed, method=name, E=2 * c - wp - wr, cross=c, within_pred=wp,
                     within_real=wr, mean_gap=float(np.linalg.norm(zp.mean(0) - zr.mean(0))),
                     var_pred=float(zp.var(0).sum()), var_real=float(zr.var(0).sum())))  # fmt: skip
out = pd.DataFrame(rows)
path = Path(__file__).with_name("spread_check.csv")
out.to_csv(path, mode="a", header=not path.exists(), index=False)
print(out.round(3).to_string())
