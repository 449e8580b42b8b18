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
print("scales", {k: round(v, 2) for k, v in model.engine.effect_scales.items()})
rng = np.random.default_rng(0)
out = {}
for ct in sorted(set(obs.cell_type)):
    in_ct = (obs.cell_type == ct).to_numpy()
    source = adata[in_ct & ~pert]
    control = model.log_expression(source)
    for drug in sorted(set(obs.perturbation[pert])):
        for dose in (0.3, 1.0, 3.0, 10.0):
            m = in_ct & (obs.perturbation == drug).to_numpy() & (obs.dose == dose).to_numpy()
            real = model.log_expression(adata[m])
            res = {}
            tgt = {"perturbation": drug, "dose": dose}
            p = model.predict(source, target=tgt, steps=20, seed=0, progress=False)
            res["cf"] = model.log_expression(p)
            p = model.predict(
                source, target=tgt, steps=20, seed=0, progress=False, calibrated=False
            )
            res["cf_nocal"] = model.log_expression(p)
            rec = model.log_expression(
                model.predict(
                    source,
                    target={"perturbation": "control", "dose": 0.0},
                    steps=20,
                    seed=0,
                    progress=False,
                    spread=False,
                )
            )
            p = model.log_expression(
                model.predict(source, target=tgt, steps=20, seed=0, progress=False, spread=False)
            )
            res["paired"] = np.clip(control + p - rec, 0, None)
            res["recon_err"] = rec
            g = model.generate(
                dict(tgt, cell_type=ct), n_cells=300, steps=20, seed=0, progress=False
            )
            res["gen"] = model.log_expression(g)
            idx = rng.permutation(len(real))
            h = len(idx) // 2
            res["half"] = real[idx[:h]]
            for k, pred in res.items():
                r = response_metrics(
                    pred,
                    real[idx[h:]] if k == "half" else real,
                    control,
                    top_n=(50,),
                    distributional=False,
                )
                out.setdefault((k, dose), []).append(r["pearson_delta_top50"])
for (k, d), v in sorted(out.items()):
    print(k, d, round(float(np.mean(v)), 3))
