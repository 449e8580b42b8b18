"""Pairs measured nowhere (sim_combo's first two folds, on worlds the benchmark does not
score): the composed pair with and without the parts' mean calibrated effect scale.
``python run.py WORLD``; rows to rows.jsonl."""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))  # benchmarks/
from _drug_tasks import _mean, _sim, _sim_setup, _train
from run import bench_config

from rnadiff.evaluation import response_metrics

world = int(sys.argv[1])
config = bench_config(None, None)
out = Path(__file__).with_name("rows.jsonl")
for interaction in (0.0, 1.0):
    adata, _ = _sim(
        world, 9000, n_genetic=4, n_drugs=4, n_combinations=6, times=(24.0,), doses=(10.0,),
        interaction=interaction,
    )  # fmt: skip
    obs = adata.obs
    pert = obs.perturbation.astype(str)
    pair = pert.str.contains("+", regex=False).to_numpy()
    train = adata[~pair]
    model, _ = _train(train, _sim_setup(), config, world)
    tobs = train.obs
    for ct in sorted(set(obs.cell_type)):
        in_ct = (obs.cell_type == ct).to_numpy()
        source = adata[in_ct & (pert == "control").to_numpy()]
        control = model.log_expression(source)
        t_ct = (tobs.cell_type == ct).to_numpy()
        for combo in sorted(set(pert[pair])):
            mask = in_ct & (pert == combo).to_numpy()
            real = model.log_expression(adata[mask])
            target = {"perturbation": combo, "dose": obs[mask].dose.iloc[0]}
            singles = [_mean(model, train, t_ct & (tobs.perturbation == p).to_numpy())
                       - control.mean(0) for p in combo.split("+")]  # fmt: skip
            preds = {"additive": control + singles[0] + singles[1]}
            for calibrated in (True, False):
                pred = model.predict(
                    source,
                    target=target,
                    calibrated=calibrated,
                    steps=config.sampler_steps,
                    seed=world,
                    progress=False,
                )
                preds[f"rnadiff calibrated={calibrated}"] = model.log_expression(pred)
            for method, p in preds.items():
                m = response_metrics(np.atleast_2d(p), real, control, top_n=(50,),
                                     distributional=False)  # fmt: skip
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
