"""The blend on more simulated worlds than the benchmark's three (issue 22, ``sim_unseen_drug``).

``python more_worlds.py SEED``: the ``sim_unseen_drug`` world and split of seed SEED (seeds
3 and up are worlds the benchmark never draws), one model; every held-out drug predicted at 1
and 10 uM from the control cells with the blend (``anchor=True``, the default) and with the
network's projection alone (``anchor=False``; no other anchor applies to a drug never
measured), beside the train mean and the Tanimoto-nearest drug, scored as the benchmark scores.
Rows appended to ``rows_more_worlds.csv`` beside this file.
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # benchmarks/
import _drug_tasks as dt
from run import bench_config

seed = int(sys.argv[1])
config = bench_config(None, None)
adata, truth = dt._sim(
    seed, 9000, n_genetic=0, n_combinations=0, n_drugs=30, times=(24.0,), doses=(1.0, 10.0),
    n_cell_types=1,
)  # fmt: skip
obs = adata.obs
smiles = {
    k: v
    for k, v in zip(obs.perturbation.astype(str), obs.smiles.astype(str), strict=True)
    if v.strip() and v != "nan" and k != "control"
}
held = dt._unseen_split(sorted(smiles), seed)
train = adata[~obs.perturbation.isin(held).to_numpy()]
model, _ = dt._train(train, dt._sim_setup(), config, seed)
model.add_molecules({d: smiles[d] for d in held})
trained = [d for d in sorted(set(train.obs.perturbation.astype(str))) if d != "control"]
sim = dt._tanimoto(smiles, held, trained)
nearest = {d: trained[int(np.argmax(sim[i]))] for i, d in enumerate(held)}
source = adata[(obs.perturbation == "control").to_numpy()]
control = model.log_expression(source)
shift = control.mean(0)
tobs = train.obs
rows = []
for dose in (1.0, 10.0):
    at = (tobs.dose == dose).to_numpy()
    train_mean = dt._mean(model, train, at & (tobs.perturbation != "control").to_numpy())
    for drug in held:
        real = model.log_expression(
            adata[((obs.perturbation == drug) & (obs.dose == dose)).to_numpy()]
        )
        kw = dict(target={"perturbation": drug, "dose": dose}, steps=config.sampler_steps,
                  seed=seed, progress=False)  # fmt: skip
        preds = {
            "rnadiff (blend, default)": model.log_expression(model.predict(source, **kw)),
            "rnadiff (projection alone)": model.log_expression(
                model.predict(source, anchor=False, **kw)
            ),
            "baseline: train mean at dose": control + (train_mean - shift),
            "baseline: nearest training drug (Tanimoto)": control
            + dt._mean(model, train, at & (tobs.perturbation == nearest[drug]).to_numpy())
            - shift,
        }
        rows += dt._scores("sim_unseen_drug (more worlds)", "held-out drugs", seed,
                           f"{drug}@{dose:g}", preds, real, control)  # fmt: skip
out = Path(__file__).with_name("rows_more_worlds.csv")
d = pd.DataFrame(rows).assign(trust=model.prior["structure_trust"])
d.to_csv(out, mode="a", header=not out.exists(), index=False)
print(seed, d[d.metric == "pearson_delta_top50"].groupby("method").value.mean().round(3).to_dict())
