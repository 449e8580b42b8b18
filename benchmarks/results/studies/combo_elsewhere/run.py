"""Pairs measured in one cell type and held out in the other (simulated worlds the benchmark
does not score): does rnadiff carry a pair's interaction over, where the additive baseline
(sum of the singles in the target type) cannot? ``python run.py WORLD [INTERACTION [ROWS
[whole]]]``: one JSON line per (cell type, pair) to ROWS (default rows.jsonl); ``whole``: the
earlier compose, the whole pair's effect from the other type, instead of the interaction
transfer."""

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # benchmarks/
from _drug_tasks import _mean, _sim, _sim_setup, _train
from run import bench_config

from rnadiff.evaluation import response_metrics

world = int(sys.argv[1])
interaction = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
if "whole" in sys.argv[4:]:  # the earlier compose: the whole pair's effect from the other type
    from rnadiff.sampling._engine import SamplingEngine

    SamplingEngine.interaction_cells = lambda self, obs, mask: np.zeros(len(mask), dtype=bool)
config = bench_config(None, None)
adata, truth = _sim(
    world, 9000, n_genetic=4, n_drugs=4, n_combinations=6, times=(24.0,), doses=(10.0,),
    interaction=interaction,
)  # fmt: skip
obs = adata.obs
types = sorted(set(obs.cell_type))
pert = obs.perturbation.astype(str)
pairs = sorted({p for p in pert if "+" in p})
measured_in = {p: types[i % len(types)] for i, p in enumerate(pairs)}
held = np.array(
    [("+" in p) and measured_in[p] != ct for p, ct in zip(pert, obs.cell_type, strict=True)]
)
train = adata[~held]
t0 = time.perf_counter()
model, train_s = _train(train, _sim_setup(), config, world)
tobs = train.obs
out = Path(__file__).with_name(sys.argv[3] if len(sys.argv) > 3 else "rows.jsonl")
for ct in types:
    in_ct = (obs.cell_type == ct).to_numpy()
    source = adata[in_ct & (pert == "control").to_numpy()]
    control = model.log_expression(source)
    shift = control.mean(0)
    t_ct = (tobs.cell_type == ct).to_numpy()
    for combo in pairs:
        other = measured_in[combo]
        if other == ct:
            continue
        a, b = combo.split("+")
        real = model.log_expression(adata[in_ct & (pert == combo).to_numpy()])
        row = obs[in_ct & (pert == combo).to_numpy()].iloc[0]
        pred = model.predict(
            source,
            target={"perturbation": combo, "dose": row.dose},
            steps=config.sampler_steps,
            seed=world,
            progress=False,
        )
        singles = [
            _mean(model, train, t_ct & (tobs.perturbation == p).to_numpy()) - shift for p in (a, b)
        ]
        o_ct = (tobs.cell_type == other).to_numpy()
        pair_other = _mean(model, train, o_ct & (tobs.perturbation == combo).to_numpy()) - _mean(
            model, train, o_ct & (tobs.perturbation == "control").to_numpy()
        )
        preds = {
            "rnadiff": model.log_expression(pred),
            "additive": control + singles[0] + singles[1],
            "pair from the other type": control + pair_other,
            "additive + interaction from the other type": control
            + singles[0]
            + singles[1]
            + pair_other
            - sum(
                _mean(model, train, o_ct & (tobs.perturbation == p).to_numpy())
                - _mean(model, train, o_ct & (tobs.perturbation == "control").to_numpy())
                for p in (a, b)
            ),
        }
        for method, p in preds.items():
            m = response_metrics(np.atleast_2d(p), real, control, top_n=(50,), distributional=False)
            with out.open("a") as f:
                f.write(
                    json.dumps(
                        {
                            "world": world,
                            "interaction": interaction,
                            "type": ct,
                            "pair": combo,
                            "method": method,
                            "pearson_delta_top50": m["pearson_delta_top50"],
                            "r2_mean_all": m["r2_mean_all"],
                        }
                    )
                    + "\n"
                )
print(f"world {world}: {time.perf_counter() - t0:.0f} s")
