"""Why does rnadiff miss ``sim_fate``'s state compositions? (issue 22) A diagnostic on the
task's own world (no choice of default is made from it).

``python diag.py SEED [STEPS] [GUIDANCE ...]``: the ``sim_fate`` world of seed SEED (4 drugs,
times 0 / 24 / 48 / 72 h, every drug's 48 h held out), rnadiff trained as the benchmark trains
it (STEPS: training steps instead of the length rule's), the benchmark's state classifier; for
each drug, the state composition (classified and confusion-adjusted, as ``predict_fate``) of
cells *generated* at the measured 24 h and 72 h and at the held-out 48 h, at each guidance
weight, beside the real compositions. Also the counterfactual of the 48 h control cells. Table
appended to ``compositions.csv`` beside this file.
"""

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # benchmarks/
import _drug_tasks as dt
from run import bench_config

from rnadiff.fate import StateClassifier, composition

seed = int(sys.argv[1])
steps = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] != "default" else None
weights = [float(w) for w in sys.argv[3:]] or [1.0]
config = bench_config(steps, None)
adata, truth, perturbed, held, model, _ = dt.fate_world(seed, config)
obs = adata.obs
train = adata[~held]
trained_steps = model.history[-1]["step"]
clf = StateClassifier(seed=seed).fit(model.log_expression(train), train.obs.state.astype(str))
source = adata[(~perturbed & (obs.time == 48.0)).to_numpy()]
rows = []


def add(drug, what, comp):
    rows.append({"seed": seed, "steps": trained_steps, "drug": drug, "cells": what, **comp})


for drug in sorted(set(obs.perturbation[perturbed])):
    mine = perturbed & (obs.perturbation == drug).to_numpy()
    for t in (24.0, 48.0, 72.0):
        real = obs.state[mine & (obs.time == t).to_numpy()].astype(str)
        add(drug, f"real {t:g} h", composition(real, clf.states_, n_boot=0)["proportion"])
    for w in weights:
        for t in (24.0, 48.0, 72.0):
            gen = model.generate(
                {"perturbation": drug, "dose": 10.0, "time": t, "cell_type": "celltype_0"},
                n_cells=300, steps=config.sampler_steps, seed=seed, progress=False, guidance=w,
            )  # fmt: skip
            add(drug, f"generated {t:g} h, guidance {w:g}", dt._classified(clf, model, gen))
    pred = model.predict(
        source, target={"perturbation": drug, "dose": 10.0, "time": 48.0},
        steps=config.sampler_steps, seed=seed, progress=False,
    )  # fmt: skip
    add(drug, "counterfactual 48 h (from 48 h controls)", dt._classified(clf, model, pred))
table = pd.DataFrame(rows)
out = Path(__file__).with_name("compositions.csv")
table.to_csv(out, mode="a", header=not out.exists(), index=False)
print(table.round(2).to_string())
