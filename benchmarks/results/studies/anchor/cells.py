"""How many control cells measure the anchors (``anchor_cells``)? One model per inner split,
its anchors re-measured with each number of cells. ``python cells.py papalexi_inner|kang9k_inner
SEED [N ...]``; rows to rows_cells.jsonl."""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # benchmarks/
from _tasks import task_splits
from run import bench_config

from rnadiff import RNADiffusion
from rnadiff.data import _splits as splits
from rnadiff.evaluation._benchmark import prepare, score_split

kind, seed = sys.argv[1], int(sys.argv[2])
counts = [int(n) for n in sys.argv[3:]] or [128, 512, 2048]
config = bench_config(None, None)
if kind == "papalexi_inner":
    (outer,) = task_splits("papalexi_seen", seed)
    (split,) = splits.papalexi_seen(outer.train, seed=seed)
else:
    (split,) = task_splits("kang9k_inner", seed)
prep = prepare(split, config)
train = split.train.copy()
RNADiffusion.setup_anndata(train, **split.setup)
model = RNADiffusion(train, config=config.model_config(), seed=seed)
model.train(config=config.train_config(seed), progress=False)
genes = list(model.preprocess.all_genes)
kw = dict(steps=config.sampler_steps, seed=seed, progress=False)
predictions = {ev.name: {} for ev in split.evaluations}
seconds = {}
for n in counts:
    t0 = time.perf_counter()
    table = model.calibrate_means(n_cells=n, seed=seed)
    seconds[n] = time.perf_counter() - t0
    above = int((table.residual > table.noise).sum())
    print(f"n_cells {n}: {seconds[n]:.0f} s, {above} of {len(table)} residuals above noise")
    for ev in split.evaluations:
        predictions[ev.name][f"rnadiff n_cells={n}"] = model.predict(
            ev.source, target=ev.target, **kw
        )[:, genes].X
rows = score_split(split, prep, predictions, config)
with Path(__file__).with_name("rows_cells.jsonl").open("a") as f:
    for r in rows.to_dict("records"):
        n = int(r["method"].split("=")[1])
        r |= {"dataset": kind, "seed": seed, "calibration_s": seconds[n]}
        f.write(json.dumps(r, default=float) + "\n")
