"""Mean anchoring, post hoc (worlds the benchmark does not score): does correcting rnadiff's
prediction by its own error at the *measured* conditions it is built from (the singles of a
pair; the measured doses around a held-out one) close the gap to the empirical baselines?
``python run.py WORLD combo|dose [builtin]``; one JSON line per evaluation to rows_KIND.jsonl
(builtin: rows_KIND_builtin.jsonl, rnadiff's own mean anchoring, ``predict(anchor=True)``,
against ``anchor=False``, beside the post hoc correction).

The residual of a measured condition p in cell type c is r(c, p) = mean of its training cells
- mean of rnadiff's counterfactual of the type's control cells under p (log expression).
combo: pair measured nowhere: pred + r(a) + r(b); measured in the other type c':
pred + r(a) + r(b) + r'(pair) - r'(a) - r'(b). dose: pred(d) + the residuals of the measured
doses interpolated linearly in log dose (outside: the nearest)."""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # benchmarks/
from _drug_tasks import (
    DOSE_FOLDS,
    _log_interp,
    _mean,
    _nearest_dose,
    _sim,
    _sim_setup,
    _train,
    dose_cases,
    dose_split,
)
from run import bench_config

from rnadiff.evaluation import response_metrics

world, kind = int(sys.argv[1]), sys.argv[2]
config = bench_config(None, None)
builtin = "builtin" in sys.argv[3:]
suffix = ("_builtin" if builtin else "") + "".join(f"_{a}" for a in sys.argv[4:])
out = Path(__file__).with_name(f"rows_{kind}{suffix}.jsonl")  # suffix: a study variant


def write(fold, ev, preds, real, control):
    for method, p in preds.items():
        p = p if p.ndim == 2 else control + (p - control.mean(0))
        m = response_metrics(p, real, control, top_n=(50,), distributional=False)
        row = {"world": world, "fold": fold, "evaluation": ev, "method": method}
        row |= {k: m[k] for k in ("pearson_delta_top50", "r2_mean_all")}
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")


def predict_mean(model, source, target, anchor=False):
    pred = model.predict(source, target=target, steps=config.sampler_steps, seed=world,
                         progress=False, anchor=anchor)  # fmt: skip
    return model.log_expression(pred)


if kind == "combo":
    folds = (("additive truth", 0.0, False), ("with interactions", 1.0, False),
             ("pair measured in the other type", 1.0, True))  # fmt: skip
    for fold, interaction, elsewhere in folds:
        adata, _ = _sim(world, 9000, n_genetic=4, n_drugs=4, n_combinations=6, times=(24.0,),
                        doses=(10.0,), interaction=interaction)  # fmt: skip
        obs = adata.obs
        types = sorted(set(obs.cell_type))
        perts = obs.perturbation.astype(str)
        pair = perts.str.contains("+", regex=False).to_numpy()
        combos = sorted(set(perts[pair]))
        measured_in = {c: types[i % 2] if elsewhere else None for i, c in enumerate(combos)}
        pairs_ct = zip(perts, obs.cell_type, strict=True)
        held = pair & np.array([measured_in.get(p) != t for p, t in pairs_ct])
        train = adata[~held]
        model, _ = _train(train, _sim_setup(), config, world)
        tobs = train.obs
        resid, ctrl = {}, {}
        for ct in types:  # residuals of every measured condition of each type
            in_ct = (obs.cell_type == ct).to_numpy()
            source = adata[in_ct & (perts == "control").to_numpy()]
            ctrl[ct] = (source, model.log_expression(source))
            t_ct = (tobs.cell_type == ct).to_numpy()
            for p in sorted(set(tobs.perturbation[t_ct].astype(str)) - {"control"}):
                mask = t_ct & (tobs.perturbation == p).to_numpy()
                dose = tobs.dose[mask].iloc[0]
                resid[ct, p] = _mean(model, train, mask) - predict_mean(
                    model, source, {"perturbation": p, "dose": dose}).mean(0)  # fmt: skip
        for ct in types:
            source, control = ctrl[ct]
            in_ct = (obs.cell_type == ct).to_numpy()
            t_ct = (tobs.cell_type == ct).to_numpy()
            for combo in combos:
                if measured_in[combo] == ct:
                    continue
                a, b = combo.split("+")
                mask = in_ct & (perts == combo).to_numpy()
                real = model.log_expression(adata[mask])
                pred = predict_mean(model, source, {"perturbation": combo,
                                                    "dose": obs.dose[mask].iloc[0]})  # fmt: skip
                fix = resid[ct, a] + resid[ct, b]
                if elsewhere:
                    o = measured_in[combo]
                    fix = fix + resid[o, combo] - resid[o, a] - resid[o, b]
                singles = [_mean(model, train, t_ct & (tobs.perturbation == p).to_numpy())
                           - control.mean(0) for p in (a, b)]  # fmt: skip
                preds = {"rnadiff": pred, "rnadiff anchored": pred + fix,
                         "additive": control.mean(0) + singles[0] + singles[1]}  # fmt: skip
                if builtin:
                    preds["rnadiff anchor=True"] = predict_mean(
                        model, source, {"perturbation": combo, "dose": obs.dose[mask].iloc[0]},
                        anchor=True)  # fmt: skip
                write(fold, f"{ct}:{combo}", preds, real, control)
else:
    adata, _, train, model, _ = dose_split(world, config)
    residuals = {}  # (cell type, drug) -> each measured dose's residual
    for case in dose_cases(adata, train, model, DOSE_FOLDS):
        ct, drug, dose, source = case["cell_type"], case["drug"], case["dose"], case["source"]
        doses, means, control = case["doses"], case["means"], case["control"]
        if (ct, drug) not in residuals:
            residuals[ct, drug] = [
                m - predict_mean(model, source, {"perturbation": drug, "dose": d}).mean(0)
                for m, d in zip(means, doses, strict=True)
            ]
        res = residuals[ct, drug]
        pred = predict_mean(model, source, {"perturbation": drug, "dose": dose})
        preds = {"rnadiff": pred,
                 "rnadiff anchored": pred + _log_interp(doses, res, dose),
                 "rnadiff anchored (nearest)": pred + _nearest_dose(doses, res, dose),
                 "linear in log dose": _log_interp(doses, means, dose),
                 "nearest dose": _nearest_dose(doses, means, dose)}  # fmt: skip
        if builtin:
            preds["rnadiff anchor=True"] = predict_mean(
                model, source, {"perturbation": drug, "dose": dose}, anchor=True
            )
        write(case["fold"], f"{ct}:{drug}@{dose:g}", preds, case["real"], control)
print(f"world {world} {kind}: done")
