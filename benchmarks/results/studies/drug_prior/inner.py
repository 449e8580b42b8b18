"""How should rnadiff encode a drug it never saw? (issue 22, ``lincs_unseen_drug``) Chosen on
inner splits the benchmark does not score.

``python inner.py lincs|sim SEED``: the benchmark's outer split of seed SEED is applied (its
held-out drugs removed entirely); of the remaining drugs with a structure, 20% are held out
again (the inner test drugs, ``_unseen_split`` with seed SEED + 100) and the model is trained
on the rest. Every inner test drug is predicted at every dose from the control cells with
each encoding (one model, only the unseen drug's condition row differs):

- ``projection``: its fingerprint's learned projection alone (rnadiff before this study);
- ``average``: the average seen perturbation (trust 0: every seen token by its share);
- ``fitted``: ``trust x projection + (1 - trust) x average``, the trust fitted leave-one-out
  on the training drugs' measured effects with Tanimoto-nearest drugs
  (``fit_structure_trust``);
- ``kernel``: the same trust on the Tanimoto-nearest seen tokens (3, softmax T = 0.1)
  instead of the projection.

Baselines as the benchmark's: train mean at dose, nearest training drug (Tanimoto). Scored by
Pearson delta top-50 etc. as the benchmark; rows appended to ``rows.jsonl`` beside this file.
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # benchmarks/
import _drug_tasks as dt
from run import bench_config

import rnadiff.sampling._engine as engine_module
from rnadiff.conditioning._prior import blend_prior, structure_mix, structure_prior
from rnadiff.evaluation._metrics import top_de_genes

which, seed = sys.argv[1], int(sys.argv[2])
config = bench_config(None, None)
if which == "lincs":
    adata = dt._lincs()
    setup, key, dkey, control_name = dt._lincs_setup(), "pert_iname", "pert_dose", "DMSO"
    input_type, context_keys = "log2", ()
else:
    adata, _ = dt._sim(
        seed, 9000, n_genetic=0, n_combinations=0, n_drugs=30, times=(24.0,),
        doses=(1.0, 10.0), n_cell_types=1,
    )  # fmt: skip
    setup, key, dkey, control_name = dt._sim_setup(), "perturbation", "dose", "control"
    input_type, context_keys = None, ("cell_type",)
obs = adata.obs
smiles = {
    k: v
    for k, v in zip(obs[key].astype(str), obs["smiles"].astype(str), strict=True)
    if v.strip() and v != "nan" and k != control_name
}
outer = dt._unseen_split(sorted(smiles), seed)
adata = adata[~obs[key].astype(str).isin(outer).to_numpy()].copy()
obs = adata.obs
smiles = {d: s for d, s in smiles.items() if d not in outer}
held = dt._unseen_split(sorted(smiles), seed + 100)
train = adata[~obs[key].astype(str).isin(held).to_numpy()]
model, _ = dt._train(train, setup, config, seed, input_type=input_type)
model.add_molecules({d: smiles[d] for d in held})
fitted = dict(model.prior)
print(which, seed, "fitted trust", fitted["structure_trust"], fitted["structure_loo_error"])
tobs = train.obs
train_drugs = sorted(set(tobs[key].astype(str)) - {control_name})
with_structure = [d for d in train_drugs if d in smiles]
sim = dt._tanimoto(smiles, held, with_structure)
nearest = {d: with_structure[int(np.argmax(sim[i]))] for i, d in enumerate(held)}
row_of = {d: i for i, d in enumerate(held)}
col_of = {d: j for j, d in enumerate(with_structure)}


def kernel_mix(drug, fit):
    weights = structure_prior(drug, with_structure, lambda a, b: sim[row_of[a], col_of[b]])
    return blend_prior(weights, fit["shares"], float(fit["structure_trust"]))


VARIANTS = {
    "projection": (None, structure_mix),
    "average": (0.0, structure_mix),
    "fitted": (fitted["structure_trust"], structure_mix),
    "kernel": (fitted["structure_trust"], kernel_mix),
}
contexts = obs[list(context_keys)].drop_duplicates().to_dict("records") if context_keys else [{}]


def where(frame, **values):
    mask = np.ones(len(frame), dtype=bool)
    for k, v in values.items():
        col = frame[k]
        mask &= (col == v).to_numpy() if k == dkey else (col.astype(str) == str(v)).to_numpy()
    return mask


rows, saved = [], {}
for ctx in contexts:
    source = adata[where(obs, **{key: control_name}, **ctx)]
    control = model.log_expression(source)
    shift = control.mean(0)
    for dose in sorted(set(obs[dkey]) - {0.0}):
        train_at = where(tobs, **ctx) & (tobs[dkey] == dose).to_numpy()
        perturbed = train_at & (tobs[key].astype(str) != control_name).to_numpy()
        train_mean = dt._mean(model, train, perturbed)
        drug_means = {
            d: dt._mean(model, train, train_at & (tobs[key].astype(str) == d).to_numpy())
            for d in with_structure
            if (train_at & (tobs[key].astype(str) == d).to_numpy()).any()
        }
        for drug in held:
            real_mask = where(obs, **{key: drug}, **ctx) & (obs[dkey] == dose).to_numpy()
            if not real_mask.any():
                continue
            real = model.log_expression(adata[real_mask])
            near = train_at & (tobs[key].astype(str) == nearest[drug]).to_numpy()
            weights = structure_prior(
                drug, list(drug_means), lambda a, b: sim[row_of[a], col_of[b]]
            )
            kern = sum(w * drug_means[d] for d, w in weights.items())
            preds = {
                "baseline: train mean at dose": control + (train_mean - shift),
                "baseline: nearest training drug (Tanimoto)": control
                + (dt._mean(model, train, near) - shift if near.any() else train_mean - shift),
            }
            for name, (trust, form) in VARIANTS.items():
                model.prior = {**fitted, "structure_trust": trust}
                engine_module.structure_mix = form
                preds[f"rnadiff ({name})"], _ = dt._predict(
                    model, source, {key: drug, dkey: dose}, config, seed
                )
            model.prior = fitted
            label = "/".join(str(v) for v in ctx.values())
            ev = f"{label + ':' if label else ''}{drug}@{dose:g}"
            task = f"{which}_inner"
            rows += dt._scores(task, "inner held-out drugs", seed, ev, preds, real, control)
            saved[ev] = dict(
                real=real.mean(0) - shift, control=shift,
                projection=preds["rnadiff (projection)"].mean(0) - control.mean(0),
                kernel_net=preds["rnadiff (kernel)"].mean(0) - control.mean(0),
                average=train_mean - shift, kernel=kern - shift,
                top=top_de_genes(real, control, 50),
            )  # fmt: skip
with Path(__file__).with_name("rows.jsonl").open("a") as f:
    for r in rows:
        f.write(json.dumps(r | {"trust": fitted["structure_trust"]}) + "\n")
np.savez_compressed(
    Path(__file__).with_name(f"vectors_{which}_{seed}.npz"),
    **{f"{ev}|{k}": v for ev, d in saved.items() for k, v in d.items()},
    trust=np.array(fitted["structure_trust"]),
)
print(which, seed, "done", len(rows))
