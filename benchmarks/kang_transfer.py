"""How should a perturbation reach a cell type where it was never measured? (Kang 2018)

For each cell type: train without its stimulated cells, predict them from its control cells
(counterfactual and generation) with each transfer mode, and score against the real cells
next to the additive baseline. Writes benchmarks/results/kang_transfer.csv.

    RNADIFF_DATA_DIR=../shared/data .venv/bin/python benchmarks/kang_transfer.py [--steps 2000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from rnadiff import RNADiffusion, TrainConfig, datasets
from rnadiff.data.preprocessing import log_expression
from rnadiff.evaluation.baselines import additive_baseline
from rnadiff.evaluation.metrics import response_metrics

MODES = [("none", None), ("guide", 2.0), ("guide", 3.0), ("compose", 1.0), ("compose", 1.5)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="training steps per fold")
    parser.add_argument("--cell-types", default="", help="comma-separated; default: all five")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/kang_transfer.csv")
    args = parser.parse_args()
    adata = datasets.load("kang2018_ifnb")
    types = args.cell_types.split(",") if args.cell_types else sorted(set(adata.obs.cluster_id))
    rows = []
    for ct in types:
        is_ct = (adata.obs.cluster_id == ct).to_numpy()
        is_stim = (adata.obs.group_id == "stim").to_numpy()
        train = adata[~(is_ct & is_stim)].copy()
        RNADiffusion.setup_anndata(
            train, perturbation_key="group_id", control="ctrl", cell_type_key="cluster_id"
        )
        model = RNADiffusion(train)
        t0 = time.perf_counter()
        model.train(config=TrainConfig(max_steps=args.steps, seed=args.seed), progress=False)
        train_s = time.perf_counter() - t0
        source, real = adata[is_ct & ~is_stim], adata[is_ct & is_stim]
        x_src, x_real = (
            log_expression(source, model.preprocess),
            log_expression(real, model.preprocess),
        )
        shifts = []
        for other in sorted(set(train.obs.cluster_id) - {ct}):
            o = (train.obs.cluster_id == other).to_numpy()
            stim = log_expression(
                train[o & (train.obs.group_id == "stim").to_numpy()], model.preprocess
            )
            ctrl = log_expression(
                train[o & (train.obs.group_id == "ctrl").to_numpy()], model.preprocess
            )
            shifts.append(stim.mean(0) - ctrl.mean(0))
        base = {"cell_type": ct, "steps": args.steps, "seed": args.seed, "train_s": train_s}
        m = response_metrics(additive_baseline(x_src, shifts), x_real, x_src)
        rows.append({**base, "method": "additive baseline", **m})
        for mode, scale in MODES:
            kw = dict(transfer=mode, transfer_scale=scale, seed=args.seed, progress=False)
            cf = model.predict(source, perturbation="stim", **kw).X
            gen = model.generate({"group_id": "stim", "cluster_id": ct}, n_cells=real.n_obs, **kw).X
            label = mode if scale is None else f"{mode} {scale:g}"
            rows.append(
                {
                    **base,
                    "method": f"counterfactual, {label}",
                    **response_metrics(cf, x_real, x_src),
                }
            )
            rows.append(
                {**base, "method": f"generation, {label}", **response_metrics(gen, x_real, x_src)}
            )
        print(pd.DataFrame(rows[-11:]).set_index("method").iloc[:, 4:].round(3), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
