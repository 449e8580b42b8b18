"""Perturbation anchors with the time courses' pooled shrinkage (2026-12-07 afternoon): as
``variants.py`` (same datasets and cases), the anchors re-measured with per-gene shrinkage
(``gene_pp``, the default) and with the part on the training cells' top 30 principal axes kept
whole (``pooled30``, ``rnadiff.conditioning._anchors.pooled_shrink``), beside ``anchor=False``.

``python variants.py world W combo|dose`` (simulated worlds, sim_combo / sim_dose layouts) or
``python variants.py papalexi_inner|kang9k_inner SEED`` (real data: the outer split's
training cells split again as the benchmark splits them). Rows to rows_variants_pooled.jsonl."""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # benchmarks/
from _drug_tasks import _sim, _sim_setup, _train
from _tasks import task_splits
from run import bench_config

import rnadiff.model._calibration as calibration
from rnadiff import RNADiffusion
from rnadiff.conditioning._anchors import pooled_shrink, shrink
from rnadiff.data import _splits as splits
from rnadiff.evaluation import response_metrics
from rnadiff.evaluation._benchmark import prepare, score_split

VARIANTS = ["gene_pp", "pooled30"]
config = bench_config(None, None)
out = Path(__file__).with_name("rows_variants_pooled.jsonl")
kind = sys.argv[1]


def write(dataset, fold, ev, method, metrics):
    row = {"dataset": dataset, "fold": fold, "evaluation": ev, "method": method} | metrics
    with out.open("a") as f:
        f.write(json.dumps(row, default=float) + "\n")


def variant_predictions(model, cases, seed):
    """{variant: [prediction per case]} for cases (source, target)."""
    preds = {"off": [], **{v: [] for v in VARIANTS}}
    kw = dict(steps=config.sampler_steps, seed=seed, progress=False)
    for source, target in cases:
        preds["off"].append(model.predict(source, target=target, anchor=False, **kw))
    axes = calibration.principal_axes(model, model.adata, np.random.default_rng(seed))
    for v in VARIANTS:
        calibration.shrink = shrink if v == "gene_pp" else (lambda r, n: pooled_shrink(r, n, axes))
        model.calibrate_means(n_cells=128, seed=seed)
        for source, target in cases:
            preds[v].append(model.predict(source, target=target, **kw))
    return preds


if kind == "world":
    world, layout = int(sys.argv[2]), sys.argv[3]
    if layout == "combo":
        folds = [("additive truth", 0.0, False), ("with interactions", 1.0, False),
                 ("pair measured in the other type", 1.0, True)]  # fmt: skip
    else:
        folds = [("doses", None, None)]
    for fold, interaction, elsewhere in folds:
        if layout == "combo":
            adata, _ = _sim(world, 9000, n_genetic=4, n_drugs=4, n_combinations=6,
                            times=(24.0,), doses=(10.0,), interaction=interaction)  # fmt: skip
            perts = adata.obs.perturbation.astype(str)
            types = sorted(set(adata.obs.cell_type))
            pair = perts.str.contains("+", regex=False).to_numpy()
            combos = sorted(set(perts[pair]))
            measured_in = {c: types[i % 2] if elsewhere else None for i, c in enumerate(combos)}
            cts = zip(perts, adata.obs.cell_type, strict=True)
            held = pair & np.array([measured_in.get(p) != t for p, t in cts])
            asked = [(ct, c, 10.0) for ct in types for c in combos if measured_in[c] != ct]
        else:
            adata, _ = _sim(world, 9000, n_genetic=0, n_combinations=0, n_drugs=8,
                            times=(24.0,), doses=(0.1, 0.3, 1.0, 3.0, 10.0))  # fmt: skip
            perts = adata.obs.perturbation.astype(str)
            types = sorted(set(adata.obs.cell_type))
            held = (perts != "control").to_numpy() & adata.obs.dose.isin([1.0, 10.0]).to_numpy()
            drugs = sorted(set(perts) - {"control"})
            asked = [(ct, d, dose) for ct in types for d in drugs for dose in (1.0, 10.0)]
        model, _ = _train(adata[~held], _sim_setup(), config, world)
        obs = adata.obs
        cases, reals, ctrls, names = [], [], [], []
        for ct, p, dose in asked:
            in_ct = (obs.cell_type == ct).to_numpy()
            source = adata[in_ct & (perts == "control").to_numpy()]
            mask = in_ct & (perts == p).to_numpy() & (obs.dose == dose).to_numpy()
            cases.append((source, {"perturbation": p, "dose": dose}))
            reals.append(model.log_expression(adata[mask]))
            ctrls.append(model.log_expression(source))
            names.append(f"{ct}:{p}@{dose:g}")
        for method, preds in variant_predictions(model, cases, world).items():
            for name, pred, real, ctrl in zip(names, preds, reals, ctrls, strict=True):
                m = response_metrics(model.log_expression(pred), real, ctrl, top_n=(50,),
                                     distributional=False)  # fmt: skip
                f = fold if layout == "combo" else ("1 uM" if "@1" == name[-2:] else "10 uM")
                write(f"world{world}_{layout}", f, name, method,
                      {k: m[k] for k in ("pearson_delta_top50", "r2_mean_all")})  # fmt: skip
else:
    seed = int(sys.argv[2])
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
    cases = [(ev.source, ev.target) for ev in split.evaluations]
    preds = variant_predictions(model, cases, seed)
    predictions = {
        ev.name: {f"rnadiff {v}": preds[v][i][:, genes].X for v in preds}
        for i, ev in enumerate(split.evaluations)
    }
    from rnadiff.evaluation._benchmark import baseline_predictions

    for name, p in baseline_predictions(split, prep).items():
        predictions[name].update({k: v for k, v in p.items() if k == "baseline: additive"})
    rows = score_split(split, prep, predictions, config)
    for r in rows.to_dict("records"):
        write(kind, f"seed{seed}", r["evaluation"], r["method"], {r["metric"]: r["value"]})
print(f"{sys.argv[1:]}: done")
