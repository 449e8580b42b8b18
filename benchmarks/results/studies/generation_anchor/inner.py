"""Generation from noise moved to the measured means (``generate(anchor=True)``) or the
network's own cells (``anchor=False``)? Chosen on data the benchmark does not score.

``python inner.py papalexi|kang|simdose|simdrug SEED``; one model per run, both settings on it:

- ``papalexi``: the outer ``papalexi_seen`` training cells split again (seed SEED + 100); each
  knock-out's inner held-out cells vs its generated cells (measured conditions).
- ``kang``: the outer ``kang_loo_celltype`` fold of seed SEED holding out B cells; within its
  training cells the stimulated CD14+ Monocytes, then the stimulated CD4 T cells, are held out
  (one model each) and generated (a context where the stimulus was never measured).
- ``simdose``: a simulated world (seed SEED >= 10) with ``sim_dose``'s protocol: 1 and 10 uM
  held out and generated (doses never measured).
- ``simdrug``: a simulated world (seed SEED >= 10) with ``sim_unseen_drug``'s protocol: 20%
  of the drugs held out, added by SMILES and generated at both doses (drugs never measured).

Scored as the benchmark scores generation (``response_metrics`` against the real held-out
cells, the context's real control cells as reference). Rows appended to ``rows.jsonl``.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # benchmarks/
import _drug_tasks as dt
from run import bench_config

from rnadiff import RNADiffusion, datasets
from rnadiff.data import _splits as splits
from rnadiff.evaluation._metrics import response_metrics

which, seed = sys.argv[1], int(sys.argv[2])
config = bench_config(None, None)
rows = []


def score(task, evaluation, model, condition, real, control):
    for anchor in (True, False):
        g = model.generate(condition, n_cells=max(real.n_obs, 50), seed=seed, progress=False,
                           anchor=anchor, steps=config.sampler_steps)  # fmt: skip
        x = model.log_expression(g)
        m = response_metrics(
            x, model.log_expression(real), model.log_expression(control), top_n=(20, 100),
            distributional=True, seed=seed,
        )  # fmt: skip
        m |= {
            "zero_fraction": float((x == 0).mean()),
            "anchored": g.uns["rnadiff"]["anchored_cells"],
        }
        for k, v in m.items():
            rows.append(dict(task=task, seed=seed, evaluation=evaluation,
                             method=f"generation [{'anchor' if anchor else 'network'}]",
                             metric=k, value=float(v)))  # fmt: skip
    zeros = float((model.log_expression(real) == 0).mean())
    rows.append(dict(task=task, seed=seed, evaluation=evaluation, method="real",
                     metric="zero_fraction", value=zeros))  # fmt: skip


def train(adata, setup, s):
    a = adata.copy()
    RNADiffusion.setup_anndata(a, **setup)
    m = RNADiffusion(a, config=config.model_config(), seed=s)
    m.train(config=config.train_config(s), progress=False)
    return m


if which == "papalexi":
    data = splits.papalexi_clean(datasets.load("papalexi2021"))
    (outer,) = splits.papalexi_seen(data, seed=seed)
    (split,) = splits.papalexi_seen(outer.train, seed=seed + 100)
    model = train(split.train, split.setup, seed + 100)
    for ev in split.evaluations:
        score("papalexi_inner", ev.name, model, ev.condition, ev.real, ev.control)
elif which == "kang":
    folds = list(splits.kang_loo_celltype(datasets.load("kang2018_ifnb"), seed=seed))
    outer = next(f for f in folds if f.fold == "B cells")
    tr, setup = outer.train, outer.setup
    ct, pk = setup["cell_type_key"], setup["perturbation_key"]
    for inner_type in ("CD14+ Monocytes", "CD4 T cells"):
        held = ((tr.obs[ct] == inner_type) & (tr.obs[pk] == "stim")).to_numpy()
        model = train(tr[~held], setup, seed)
        ctrl = tr[((tr.obs[ct] == inner_type) & (tr.obs[pk] == "ctrl")).to_numpy()]
        score("kang_inner", inner_type, model, {ct: inner_type, pk: "stim"}, tr[held], ctrl)
elif which == "simdose":
    adata, _ = dt.sim_dose_world(seed)
    obs = adata.obs
    pert = (obs.perturbation != "control").to_numpy()
    held = pert & obs.dose.isin([1.0, 10.0]).to_numpy()
    model = dt._train(adata[~held], dt._sim_setup(), config, seed)[0]
    for c in sorted(set(obs.cell_type)):
        ctrl = adata[(obs.cell_type == c).to_numpy() & ~pert]
        for drug in sorted(set(obs.perturbation[pert])):
            for dose in (1.0, 10.0):
                here = (obs.cell_type == c).to_numpy() & (obs.perturbation == drug).to_numpy()
                real = adata[held & here & (obs.dose == dose).to_numpy()]
                cond = {"cell_type": c, "perturbation": drug, "dose": dose}
                score("simdose_world", f"{c}:{drug}@{dose:g}", model, cond, real, ctrl)
else:
    adata, _ = dt.sim_drug_world(seed)
    obs = adata.obs
    smiles = dt.smiles_table(obs, "perturbation", "control")
    held_drugs = dt._unseen_split(sorted(smiles), seed)
    held = obs.perturbation.isin(held_drugs).to_numpy()
    model = dt._train(adata[~held], dt._sim_setup(), config, seed)[0]
    model.add_molecules({d: smiles[d] for d in held_drugs})
    c = str(obs.cell_type.iloc[0])
    ctrl = adata[(obs.perturbation == "control").to_numpy()]
    for drug in held_drugs:
        for dose in (1.0, 10.0):
            real = adata[
                held & (obs.perturbation == drug).to_numpy() & (obs.dose == dose).to_numpy()
            ]
            cond = {"cell_type": c, "perturbation": drug, "dose": dose}
            score("simdrug_world", f"{drug}@{dose:g}", model, cond, real, ctrl)
with Path(__file__).with_name("rows.jsonl").open("a") as f:
    for r in rows:
        f.write(json.dumps(r) + "\n")
print(which, seed, "done", len(rows))
