"""cell-eval's DES of rnadiff's counterfactual with counts out (exact zeros), on Kang
leave-one-cell-type-out (issue 24; a study, no default changed).

``python run.py SEED [TASK]``: every fold of TASK (default ``kang_loo_celltype``; also
``papalexi_seen``) at SEED, the benchmark's baselines
and rnadiff as the benchmark trains it, plus ``rnadiff (counterfactual, counts)``: the same
model's counterfactual with ``counts=True`` (Poisson counts at each source cell's depth, ``X``
their log-normalized values). Scored by cell-eval itself (its venv, ``peers/install.sh
celleval``) and by the benchmark's own metrics; rows appended to ``celleval.csv`` and
``ours.csv`` beside this file.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # benchmarks/
from _peers import celleval_bundle, run_celleval
from _tasks import task_splits
from run import bench_config

from rnadiff.evaluation._benchmark import (
    baseline_predictions,
    prepare,
    rnadiff_predictions,
    score_split,
)

HERE = Path(__file__).resolve().parent
seed = int(sys.argv[1])
task = sys.argv[2] if len(sys.argv) > 2 else "kang_loo_celltype"
config = bench_config(None, None)
ours_rows = []
with tempfile.TemporaryDirectory() as tmp:
    bundles = []
    for i, split in enumerate(task_splits(task, seed)):
        prep = prepare(split, config)
        predictions = baseline_predictions(split, prep)
        mine, _, model = rnadiff_predictions(split, config)
        genes = list(model.preprocess.all_genes)
        kw = dict(steps=config.sampler_steps, seed=split.seed, progress=False, prior=True)
        for ev in split.evaluations:
            if ev.name not in mine or not mine[ev.name]:  # rnadiff could not predict it
                continue
            counts = model.predict(ev.source, target=ev.target, counts=True, **kw)[:, genes].X
            mine[ev.name]["rnadiff (counterfactual, counts)"] = np.asarray(counts)
            predictions.setdefault(ev.name, {}).update(mine[ev.name])
        ours_rows.append(score_split(split, prep, predictions, config))
        bundle = Path(tmp) / f"{task}_{seed}_{i}.npz"
        celleval_bundle(bundle, split, prep, predictions)
        bundles.append(bundle)
        print(f"seed {seed}: {split.fold} done", flush=True)
    run_celleval(bundles, Path(tmp) / "celleval.csv")
    rows = pd.read_csv(Path(tmp) / "celleval.csv")
for name, frame in (("celleval.csv", rows), ("ours.csv", pd.concat(ours_rows))):
    out = HERE / name
    frame.to_csv(out, mode="a", header=not out.exists(), index=False)
