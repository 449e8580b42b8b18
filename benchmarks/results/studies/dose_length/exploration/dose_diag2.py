import sys

import numpy as np
from _world import world

from rnadiff import RNADiffusion
from rnadiff._config import TrainConfig
from rnadiff.evaluation._metrics import response_metrics

world_seed, steps = int(sys.argv[1]), int(sys.argv[2])
adata, obs, pert, train = world(world_seed)
model = RNADiffusion(train, seed=0)
model.train(config=TrainConfig(seed=0, min_steps=steps, max_steps=max(4000, steps)), progress=False)
eng = model.engine
orig = type(eng).interpolation
out = {}


def lm(m):
    return model.log_expression(adata[m]).mean(0)


for ct in sorted(set(obs.cell_type)):
    in_ct = (obs.cell_type == ct).to_numpy()
    source = adata[in_ct & ~pert]
    control = model.log_expression(source)
    for drug in sorted(set(obs.perturbation[pert])):

        def md(d, in_ct=in_ct, drug=drug):
            return in_ct & (obs.perturbation == drug).to_numpy() & (obs.dose == d).to_numpy()

        real = model.log_expression(adata[md(1.0)])

        def cf(d, source=source, drug=drug):
            return model.log_expression(
                model.predict(
                    source,
                    target={"perturbation": drug, "dose": d},
                    steps=20,
                    seed=0,
                    progress=False,
                )
            )

        res = {}
        res["interp"] = cf(1.0)
        a, b = cf(0.3), cf(3.0)
        w = np.log(1 / 0.3) / np.log(10)
        res["meanmix"] = (1 - w) * a.mean(0) + w * b.mean(0)
        res["linreal"] = (1 - w) * lm(md(0.3)) + w * lm(md(3.0))
        type(eng).interpolation = lambda self, obs: {}
        res["hill"] = cf(1.0)
        res["hill10"] = cf(10.0)
        type(eng).interpolation = orig
        for k, pred in res.items():
            r = response_metrics(
                np.atleast_2d(pred),
                real if k != "hill10" else model.log_expression(adata[md(10.0)]),
                control,
                top_n=(50,),
                distributional=False,
            )
            out.setdefault(k, []).append(r["pearson_delta_top50"])
for k, v in out.items():
    print(world_seed, steps, k, round(float(np.mean(v)), 3), flush=True)
