"""A perturbation x time interaction in the condition embedding, on ``sim_fate``'s world
(issue 22; a study, no default changed).

``python run.py SEED VARIANT``: ``base`` (today's sum of covariate embeddings), ``film``
(adds ``e_drug * W e_time``) or ``prod`` (adds ``W (e_drug * e_time)``), ``W`` a zero-initialised
linear map (the model starts as today's); rnadiff trained as ``sim_fate`` trains it; the
total-variation error of the state composition of 300 cells generated at 24 / 48 / 72 h
(48 h held out) and of the counterfactual of the 48 h controls, per drug; rows appended to
``rows.csv``.
"""

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # benchmarks/
import _drug_tasks as dt
from run import bench_config

from rnadiff.conditioning import _encoders as enc
from rnadiff.fate import StateClassifier, composition

seed, variant = int(sys.argv[1]), sys.argv[2]
if variant != "base":
    orig_init, orig_forward = enc.ConditionEncoder.__init__, enc.ConditionEncoder.forward

    def init(self, categorical, continuous, dim, *, perturbation=None):
        orig_init(self, categorical, continuous, dim, perturbation=perturbation)
        self.pt = None
        if "time" in self.encoders and "perturbation" in self.encoders:
            with torch.random.fork_rng(devices=[]):  # the other weights start as today's
                self.pt = nn.Linear(dim, dim)
            nn.init.zeros_(self.pt.weight)
            nn.init.zeros_(self.pt.bias)

    def forward(self, cond, n):
        out = orig_forward(self, cond, n)
        if self.pt is None:
            return out
        drug = self.encoders["perturbation"]
        dose = (cond[self.dose_key],) if self.dose_key else ()
        p, t = drug(cond["perturbation"], *dose), self.encoders["time"](cond["time"])
        return out + (p * self.pt(t) if variant == "film" else self.pt(p * t))

    enc.ConditionEncoder.__init__, enc.ConditionEncoder.forward = init, forward


def tv(found: pd.Series, real: pd.Series, states) -> float:
    """Total variation distance of two compositions."""
    gap = found.reindex(states).fillna(0) - real.reindex(states).fillna(0)
    return 0.5 * float(np.abs(gap).sum())


config = bench_config(None, None)
t0 = time.perf_counter()
adata, truth, perturbed, held, model, _ = dt.fate_world(seed, config)
obs, train = adata.obs, adata[~held]
clf = StateClassifier(seed=seed).fit(model.log_expression(train), train.obs.state.astype(str))
states, rows = clf.states_, []
source = adata[(~perturbed & (obs.time == 48.0)).to_numpy()]
for drug in sorted(set(obs.perturbation[perturbed])):
    mine = perturbed & (obs.perturbation == drug).to_numpy()

    def real(t, mine=mine):
        labels = obs.state[mine & (obs.time == t).to_numpy()].astype(str)
        return pd.Series(composition(labels, states, n_boot=0)["proportion"])

    for t in (24.0, 48.0, 72.0):
        target = {"perturbation": drug, "dose": 10.0, "time": t, "cell_type": "celltype_0"}
        gen = model.generate(
            target, n_cells=300, steps=config.sampler_steps, seed=seed, progress=False
        )
        err = tv(pd.Series(dt._classified(clf, model, gen)), real(t), states)
        rows.append({"seed": seed, "variant": variant, "drug": drug, "time": t, "tv": err})
    target = {"perturbation": drug, "dose": 10.0, "time": 48.0}
    pred = model.predict(
        source, target=target, steps=config.sampler_steps, seed=seed, progress=False
    )
    err = tv(pd.Series(dt._classified(clf, model, pred)), real(48.0), states)
    rows.append({"seed": seed, "variant": variant, "drug": drug, "time": "cf48", "tv": err})
df = pd.DataFrame(rows)
out = Path(__file__).with_name("rows.csv")
df.to_csv(out, mode="a", header=not out.exists(), index=False)
means = df.groupby("time", sort=False).tv.mean().round(3).to_dict()
print(variant, seed, means, f"{time.perf_counter() - t0:.0f}s", flush=True)
