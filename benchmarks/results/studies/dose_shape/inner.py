"""Doses beyond (or between) the measured ones: should the predicted mean change keep the shape
of the measured changes around it, taking only a magnitude from the network? (issue 22,
``sim_dose`` / ``lincs_dose``). Chosen on data the benchmark does not score.

``python inner.py lincs SEED`` / ``python inner.py sim WORLD``:

- ``lincs``: the outer ``lincs_dose`` split's held-out doses (0.37, 1.11, 10 uM) removed
  entirely; of the rest (0.04, 0.12, 3.33 uM), fold ``extrapolation up`` holds out 3.33 (the
  model trains on 0.04 and 0.12) and fold ``extrapolation down`` 0.04 (trained on 0.12 and
  3.33): one model per fold.
- ``sim``: a simulated world the benchmark never draws (seeds >= 10), ``sim_dose``'s protocol
  (8 drugs x 5 doses, 2 cell types; 1 uM held out: ``interpolation``, 10 uM:
  ``extrapolation up``).

Each held-out condition is predicted from the control cells (anchored, as ``predict`` does:
``current``), and the variant ``projected``: with ``m`` the anchored change at the measured
dose(s) around it (the nearest one beyond the range; linear in log dose between two) and ``c``
the current predicted change, ``m + <c - m, m> / <m, m> m`` (the network's departure from ``m``
kept only along ``m``: the measured shape, the network's magnitude). Baselines as the
benchmark's. Rows appended to ``rows.jsonl``.
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # benchmarks/
import _drug_tasks as dt
from _studies import bench_config as study_config

which, seed = sys.argv[1], int(sys.argv[2])
# optional third argument: the anchors' calibration cells (TrainConfig.anchor_cells, default 64)
# or "pooled": perturbation anchors shrunk as time courses' are (their part on the training
# cells' top principal axes kept whole), the anchors re-measured after training
pooled = len(sys.argv) > 3 and sys.argv[3] == "pooled"
cells = int(sys.argv[3]) if len(sys.argv) > 3 and not pooled else None
config = study_config({"train.anchor_cells": cells} if cells else {})


def projected(pred, control_mean, anchored_means, doses, dose):
    """The variant (see the module doc) as cells: ``pred`` shifted by ``desired - c``."""
    c = pred.mean(0) - control_mean
    m = dt._log_interp(doses, anchored_means, dose) - control_mean
    if dose < min(doses) or dose > max(doses):
        m = dt._nearest_dose(doses, anchored_means, dose) - control_mean
    desired = m + (np.dot(c - m, m) / np.dot(m, m)) * m
    return np.clip(pred + (desired - c), 0, None)


def run_fold(task, fold, adata, train, setup, key, dkey, control, held_doses, contexts, **kw):
    model, _ = dt._train(train, setup, config, seed, **kw)
    if pooled:
        import rnadiff.model._calibration as cal
        from rnadiff.conditioning._anchors import pooled_shrink

        axes = cal.principal_axes(model, model.adata, np.random.default_rng(seed))
        plain = cal.shrink
        cal.shrink = lambda r, noise: pooled_shrink(r, noise, axes)
        try:
            model.calibrate_means(n_cells=64, seed=seed, progress=False)
        finally:
            cal.shrink = plain
    obs, tobs = adata.obs, train.obs
    rows = []
    for ctx in contexts:
        in_ctx = np.ones(len(obs), bool)
        t_ctx = np.ones(len(tobs), bool)
        for k, v in ctx.items():
            in_ctx &= (obs[k].astype(str) == v).to_numpy()
            t_ctx &= (tobs[k].astype(str) == v).to_numpy()
        source = adata[in_ctx & (obs[key] == control).to_numpy()]
        ctrl = model.log_expression(source)
        shift = ctrl.mean(0)
        t_pert = t_ctx & (tobs[key] != control).to_numpy()
        train_mean = dt._mean(model, train, t_pert)
        for drug in sorted(set(tobs[key][t_pert].astype(str))):
            mine = t_ctx & (tobs[key] == drug).to_numpy()
            doses = sorted(set(tobs[dkey][mine]))
            if len(doses) < 2:
                continue
            means = [dt._mean(model, train, mine & (tobs[dkey] == d).to_numpy()) for d in doses]
            anchored = {}
            for dose in held_doses:
                real_mask = in_ctx & (obs[key] == drug).to_numpy() & (obs[dkey] == dose).to_numpy()
                if not real_mask.any():
                    continue
                real = model.log_expression(adata[real_mask])
                pred, _ = dt._predict(model, source, {key: drug, dkey: dose}, config, seed)
                for d in doses:  # anchored predictions at the measured doses
                    if d not in anchored:
                        p, _ = dt._predict(model, source, {key: drug, dkey: d}, config, seed)
                        anchored[d] = p.mean(0)
                am = [anchored[d] for d in doses]
                raw = (
                    dt._nearest_dose(doses, means, dose)
                    if dose < min(doses) or dose > max(doses)
                    else dt._log_interp(doses, means, dose)
                )
                near = (
                    dt._nearest_dose(doses, am, dose)
                    if dose < min(doses) or dose > max(doses)
                    else dt._log_interp(doses, am, dose)
                )
                preds = {
                    "rnadiff (current)": pred,
                    "rnadiff (projected)": projected(pred, shift, am, doses, dose),
                    # the measured doses' residuals taken whole (no shrinkage): the raw
                    # training means around the dose plus the network's own increment
                    "rnadiff (unshrunk)": np.clip(pred + (raw - near), 0, None),
                    "baseline: nearest measured dose": dt._nearest_dose(doses, means, dose),
                    "baseline: linear in log dose": dt._log_interp(doses, means, dose),
                    "baseline: train mean": train_mean,
                }
                preds = {m: p if p.ndim == 2 else ctrl + (p - shift) for m, p in preds.items()}
                label = "/".join(ctx.values())
                ev = f"{label + ':' if label else ''}{drug}@{dose:g}"
                this = "interpolation" if min(doses) < dose < max(doses) else fold
                if cells or pooled:
                    tag = f"anchor_cells {cells}" if cells else "pooled"
                    preds = {f"{m} [{tag}]": p for m, p in preds.items()
                             if m.startswith("rnadiff")}  # fmt: skip
                rows += dt._scores(task, this, seed, ev, preds, real, ctrl)
    return rows


rows = []
if which == "lincs":
    adata = dt._lincs()
    key, dkey, control = dt.LINCS["key"], dt.LINCS["dose"], dt.LINCS["control"]
    adata = adata[~adata.obs[dkey].isin([0.37, 1.11, 10.0]).to_numpy()].copy()
    obs = adata.obs
    for fold, dose in (("extrapolation up", 3.33), ("extrapolation down", 0.04)):
        held = (obs[dkey] == dose).to_numpy()
        rows += run_fold(
            "lincs_inner_dose", fold, adata, adata[~held], dt._lincs_setup(), key, dkey,
            control, [dose], [{}], input_type="log2",
        )  # fmt: skip
else:
    adata, _ = dt.sim_dose_world(seed)
    obs = adata.obs
    perturbed = (obs.perturbation != "control").to_numpy()
    held = perturbed & obs.dose.isin([1.0, 10.0]).to_numpy()
    contexts = [{"cell_type": c} for c in sorted(set(obs.cell_type.astype(str)))]
    rows += run_fold(
        "sim_world_dose", "extrapolation up", adata, adata[~held], dt._sim_setup(),
        "perturbation", "dose", "control", [1.0, 10.0], contexts,
    )  # fmt: skip
with Path(__file__).with_name("rows.jsonl").open("a") as f:
    for r in rows:
        f.write(json.dumps(r) + "\n")
print(which, seed, "done", len(rows))
