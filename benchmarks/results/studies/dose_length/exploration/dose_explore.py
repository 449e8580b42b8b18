"""Exploration: why sim_dose under-fits. World seeds not scored by the benchmark."""

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
from _world import world

from rnadiff import RNADiffusion
from rnadiff._config import ModelConfig, TrainConfig
from rnadiff.evaluation._metrics import response_metrics

world_seed, variant = int(sys.argv[1]), sys.argv[2]
adata, obs, pert, train = world(world_seed)
tc = TrainConfig(seed=0)
mc = ModelConfig()
v = dict(kv.split("=") for kv in variant.split(",")) if variant != "default" else {}
if "steps" in v:
    tc = dataclasses.replace(tc, min_steps=int(v["steps"]), max_steps=max(4000, int(v["steps"])))
if "lr" in v:
    tc = dataclasses.replace(tc, lr=float(v["lr"]))
if "batch" in v:
    tc = dataclasses.replace(tc, batch_size=int(v["batch"]))
if "width" in v:
    mc = dataclasses.replace(mc, network=dataclasses.replace(mc.network, width=int(v["width"])))
if "pdrop" in v:
    mc = dataclasses.replace(mc, p_drop=float(v["pdrop"]))
if "unknown" in v:  # the Hill level of an unknown dose: learned or full
    mc = dataclasses.replace(
        mc, conditioning=dataclasses.replace(mc.conditioning, dose_unknown=v["unknown"])
    )
if "dr" in v:
    mc = dataclasses.replace(
        mc, conditioning=dataclasses.replace(mc.conditioning, dose_response=v["dr"])
    )
t0 = time.perf_counter()
model = RNADiffusion(train, config=mc, seed=0)
model.train(config=tc, progress=False)
train_s = time.perf_counter() - t0
res = {"world": world_seed, "variant": variant, "train_s": train_s, "steps": model.step}
scores = {}


def real_mean(in_ct, drug, d):
    m = in_ct & (obs.perturbation == drug).to_numpy() & (obs.dose == d).to_numpy()
    return model.log_expression(adata[m]).mean(0)


for ct in sorted(set(obs.cell_type)):
    in_ct = (obs.cell_type == ct).to_numpy()
    source = adata[in_ct & ~pert]
    control = model.log_expression(source)
    for drug in sorted(set(obs.perturbation[pert])):
        for dose in (0.3, 1.0, 3.0, 10.0):
            m = in_ct & (obs.perturbation == drug).to_numpy() & (obs.dose == dose).to_numpy()
            real = model.log_expression(adata[m])
            pred = model.predict(
                source,
                target={"perturbation": drug, "dose": dose},
                steps=20,
                seed=0,
                progress=False,
            )
            r = response_metrics(
                model.log_expression(pred), real, control, top_n=(50,), distributional=False
            )
            scores.setdefault(dose, []).append(r["pearson_delta_top50"])
            if dose in (1.0, 10.0):

                def tm(d, in_ct=in_ct, drug=drug):
                    return real_mean(in_ct, drug, d)

                lo, hi = 0.3, 3.0  # the two nearest measured doses of 1 and 10 uM
                w = (np.log(dose) - np.log(lo)) / (np.log(hi) - np.log(lo))
                lin = (1 - w) * tm(lo) + w * tm(hi)
                r = response_metrics(lin[None], real, control, top_n=(50,), distributional=False)
                scores.setdefault(f"lin{dose}", []).append(r["pearson_delta_top50"])
res.update({f"pd50@{d}": float(np.mean(s)) for d, s in scores.items()})
res["total_s"] = time.perf_counter() - t0
print(json.dumps(res))
with open(Path(__file__).with_name("runs.jsonl"), "a") as f:
    f.write(json.dumps(res) + "\n")
