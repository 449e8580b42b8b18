"""Would anchoring help a transfer? Kang leave-one-cell-type-out *inner* splits (unscored): in
the training cells of each outer fold, a second cell type's stimulated cells are held out and
predicted from its control cells by rnadiff's compose transfer; post hoc the prediction takes
the residual (anchor) of the stimulated condition in the contexts compose takes the effect
from: + sum_i w_i [r(c_i, stim) - r(c_i, ctrl)] (variant "effect residual"), and also the
reconstruction residual of the held-out type's control, + r(c, ctrl) ("+ own control").
``python kang_transfer.py SEED``; rows to rows_kang_transfer.jsonl."""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # benchmarks/
from _tasks import task_splits
from run import bench_config

from rnadiff import RNADiffusion
from rnadiff.conditioning import _conditions as conditions
from rnadiff.conditioning._anchors import anchor_cells
from rnadiff.data import _splits as splits
from rnadiff.evaluation._benchmark import baseline_predictions, prepare, score_split

seed = int(sys.argv[1])
config = bench_config(None, None)
out = Path(__file__).with_name("rows_kang_transfer.jsonl")
outer_folds = list(task_splits("kang_loo_celltype", seed))
scored = [s.fold for s in outer_folds]
for outer in outer_folds:
    inner_type = scored[(scored.index(outer.fold) + 1) % len(scored)]
    (split,) = [s for s in splits.kang_loo_celltype(outer.train, seed=seed) if s.fold == inner_type]
    prep = prepare(split, config)
    preds = baseline_predictions(split, prep)
    train = split.train.copy()
    RNADiffusion.setup_anndata(train, **split.setup)
    model = RNADiffusion(train, config=config.model_config(), seed=seed)
    model.train(config=config.train_config(seed), progress=False)
    reg, engine, anchors = model.registry, model.engine, model.anchors
    genes = list(model.preprocess.all_genes)
    modelled = np.isin(genes, list(model.genes))
    ip = conditions.perturbation_index(reg)
    (ev,) = split.evaluations
    pred = model.predict(ev.source, target=ev.target, steps=config.sampler_steps, seed=seed,
                         progress=False, spread=False)  # fmt: skip
    x = pred[:, model.genes].X
    obs_tgt = pred.obs
    plan = engine.transfer_plan(obs_tgt, "compose")
    contexts, weights, _ = engine.context_plan(plan.mask, conditions.condition_rows(reg, obs_tgt))

    def r(ctx, p, ip=ip, anchors=anchors, n=len(model.genes)):
        row = list(ctx)
        row.insert(ip, p)
        found = anchors.residual(tuple(row), np.zeros(len(anchors.keys)))
        return np.zeros(n, dtype=np.float32) if found is None else found

    w = weights[0]
    effect = sum(wi * (r(c, "stim") - r(c, "ctrl")) for c, wi in zip(contexts, w, strict=True))
    own = r((inner_type,), "ctrl")
    # the population's own mean as the reference: its mean moves by exactly the residual
    ref, every = np.tile(x.mean(0), (len(x), 1)), np.ones(len(x), dtype=bool)
    variants = {"rnadiff": x,
                "rnadiff + effect residual": anchor_cells(
                    x, np.tile(effect, (len(x), 1)), ref, every),
                "rnadiff + effect residual + own control": anchor_cells(
                    x, np.tile(effect + own, (len(x), 1)), ref, every)}  # fmt: skip
    for name, v in variants.items():
        full = pred[:, genes].X.copy()
        full[:, modelled] = v
        preds[ev.name][name] = full
    rows = score_split(split, prep, preds, config)
    with out.open("a") as f:
        for row in rows.to_dict("records"):
            row |= {"outer": outer.fold, "inner": inner_type, "seed": seed}
            f.write(json.dumps(row, default=float) + "\n")
    print(outer.fold, "->", inner_type, "done")
