"""The built time-course anchoring (``transport_targets``) on the HSMM inner split (unscored:
24 h held out of the 0 / 24 / 72 h training cells, predicted from 0 h), against the network's
own prediction (``anchor=False``). ``python hsmm_built.py SEED``; rows to rows_hsmm_built.jsonl."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # benchmarks/
from _tasks import task_splits
from run import bench_config

from rnadiff import RNADiffusion
from rnadiff.evaluation._benchmark import baseline_predictions, prepare, score_split

seed = int(sys.argv[1])
task = sys.argv[2] if len(sys.argv) > 2 else "hsmm_inner"
config = bench_config(None, None)
(split,) = task_splits(task, seed)
(ev,) = split.evaluations
prep = prepare(split, config)
preds = baseline_predictions(split, prep)
train = split.train.copy()
RNADiffusion.setup_anndata(train, **split.setup)
model = RNADiffusion(train, config=config.model_config(), seed=seed)
table = model.train(config=config.train_config(seed), progress=False)
print(model.calibrate_means.__name__, len(model.anchors or ()), "anchors")
genes = list(model.preprocess.all_genes)
for anchor in (False, True):
    cf = model.predict(ev.source, target=ev.target, steps=config.sampler_steps, seed=seed,
                       progress=False, anchor=anchor)  # fmt: skip
    print("anchored cells", cf.uns["rnadiff"].get("anchored_cells"))
    preds[ev.name]["rnadiff (anchored)" if anchor else "rnadiff"] = cf[:, genes].X
rows = score_split(split, prep, preds, config)
with Path(__file__).with_name(f"rows_{task}_built.jsonl").open("a") as f:
    for row in rows.to_dict("records"):
        f.write(json.dumps(row | {"seed": seed}, default=float) + "\n")
