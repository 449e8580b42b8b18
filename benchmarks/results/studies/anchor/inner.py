"""Mean anchoring on real data the benchmark does not score: the Kang 9k inner split (half of
the outer split's training cells held out again; stimulated cells predicted from held-out
controls, a condition measured in training). ``python inner.py SEED``: rnadiff with and
without anchoring (one model) and the baselines, scored as the harness scores; rows to
rows_inner.jsonl."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # benchmarks/
from _tasks import task_splits
from run import bench_config

from rnadiff import RNADiffusion
from rnadiff.evaluation._benchmark import baseline_predictions, prepare, score_split

seed = int(sys.argv[1])
config = bench_config(None, None)
(split,) = task_splits("kang9k_inner", seed)
prep = prepare(split, config)
preds = baseline_predictions(split, prep)
train = split.train.copy()
RNADiffusion.setup_anndata(train, **split.setup)
model = RNADiffusion(train, config=config.model_config(), seed=seed)
model.train(config=config.train_config(seed), progress=False)
genes = list(model.preprocess.all_genes)
for ev in split.evaluations:
    for anchor in (True, False):
        cf = model.predict(ev.source, target=ev.target, steps=config.sampler_steps, seed=seed,
                           progress=False, anchor=anchor)  # fmt: skip
        preds[ev.name][f"rnadiff anchor={anchor}"] = cf[:, genes].X
rows = score_split(split, prep, preds, config)
with Path(__file__).with_name("rows_inner.jsonl").open("a") as f:
    for r in rows.to_dict("records"):
        f.write(json.dumps(r, default=float) + "\n")
print(f"seed {seed}: done")
