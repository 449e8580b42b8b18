"""How faithful is generation from noise for a condition seen in training? (Kang 2018)

For each leave-one-cell-type-out fold (seed 0): train rnadiff with the benchmark's defaults,
generate control cells of the held-out type (a condition in the training data: only the
stimulated cells of that type are held out) and compare them with the real control cells of
that type, the cells the model was trained on. For scale, the real control cells of the most
similar other type (by mean expression) are compared the same way. Columns: E-distance and R²
of all gene means (the benchmark's metrics code), the total variance of real and generated
cells in the 30 principal components of all training cells, the fraction of exact zeros, and the
largest per-gene mean errors.

    OMP_NUM_THREADS=1 RNADIFF_DATA_DIR=../shared/data .venv/bin/python \\
        benchmarks/generation_fidelity.py --folds "B cells,CD4 T cells"
    .venv/bin/python benchmarks/generation_fidelity.py --summary-only
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.decomposition import PCA

from rnadiff import datasets
from rnadiff.data import splits
from rnadiff.evaluation.benchmark import BenchConfig, prepare
from rnadiff.evaluation.design_tasks import _model_order
from rnadiff.evaluation.metrics import response_metrics
from rnadiff.model import RNADiffusion

OUT = Path("benchmarks/results/generation_fidelity")


def fold_row(split, seed: int) -> dict:
    config = BenchConfig()
    prep = prepare(split, config)
    train = split.train.copy()
    RNADiffusion.setup_anndata(train, **split.setup)
    model = RNADiffusion(train, config=config.model_config(), seed=seed)
    model.train(config=config.train_config(seed), progress=False)
    (ev,) = split.evaluations
    pkey, ckey = split.setup["perturbation_key"], split.setup["cell_type_key"]
    control = split.setup["control"]
    real = prep.evaluations[ev.name]["source"]  # real control cells of the held-out type
    cond = {pkey: control, ckey: split.fold}
    generated = model.generate(cond, n_cells=real.shape[0], seed=seed, progress=False)
    gen = np.empty_like(real)
    gen[:, _model_order(prep, model)] = np.asarray(generated.X)
    obs = split.train.obs
    is_ctrl = (obs[pkey].astype(str) == control).to_numpy()
    others = {
        t: prep.train[is_ctrl & (obs[ckey].astype(str) == t).to_numpy()]
        for t in sorted(set(obs[ckey].astype(str)) - {split.fold})
    }
    nearest = min(others, key=lambda t: np.abs(others[t].mean(0) - real.mean(0)).sum())
    scores = {}
    for name, cells in (("generated", gen), (f"real {nearest}", others[nearest])):
        m = response_metrics(cells, real, real, distributional=True, seed=seed)
        scores[name] = (m["edistance"], m["r2_mean_all"])
    # spread along the data's main directions: total variance in 30 PCs of all training cells
    pca = PCA(n_components=30, random_state=seed).fit(prep.train)
    spread = {
        k: float(pca.transform(v).var(0).sum())
        for k, v in (("real", real), ("gen", gen), ("other", others[nearest]))
    }
    diff = gen.mean(0) - real.mean(0)
    worst = np.argsort(-np.abs(diff))[:5]
    genes = np.asarray(prep.state.genes)
    return {
        "fold": split.fold,
        "seed": seed,
        "n_cells": real.shape[0],
        "edistance_generated": scores["generated"][0],
        "r2_mean_all_generated": scores["generated"][1],
        "nearest_other_type": nearest,
        "edistance_other_type": scores[f"real {nearest}"][0],
        "r2_mean_all_other_type": scores[f"real {nearest}"][1],
        "pc_variance_real": spread["real"],
        "pc_variance_generated": spread["gen"],
        "pc_variance_other_type": spread["other"],
        "zeros_real": float((real == 0).mean()),
        "zeros_generated": float((gen == 0).mean()),
        "largest_mean_errors": "; ".join(
            f"{genes[i]} {diff[i]:+.2f} (real {real.mean(0)[i]:.2f})" for i in worst
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folds", default=None, help="comma-separated cell types (all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--summary-only", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "rows.csv"
    if not args.summary_only:
        torch.set_num_threads(1)
        wanted = None if args.folds is None else set(args.folds.split(","))
        done = set(pd.read_csv(path).fold) if path.exists() else set()
        for split in splits.kang_loo_celltype(datasets.load("kang2018_ifnb"), seed=args.seed):
            if (wanted is not None and split.fold not in wanted) or split.fold in done:
                continue
            row = pd.DataFrame([fold_row(split, args.seed)])
            row.to_csv(path, mode="a", header=not path.exists(), index=False)
            print(f"{split.fold} done", flush=True)
    rows = pd.read_csv(path)
    text = "# Generation fidelity for a seen condition (`benchmarks/generation_fidelity.py`)\n\n"
    text += rows.round(3).to_csv(index=False)
    (args.out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
