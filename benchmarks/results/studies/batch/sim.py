"""The minibatch that follows the data, checked on the package's simulator (issue 25).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/results/studies/batch/sim.py WORLD_SEED BATCH

A simulated screen of 40,000 cells (``rnadiff.datasets.simulate``: 1,000 genes, 3 cell types,
drugs at several doses and knock-outs, NB counts), trained under the default length rule at a
given batch (128: 3,750 steps, 12 passes; 512, the rule's choice at this size: 938 steps, 12
passes), then 200 cells generated per measured condition (``anchor=False``: the network's own
cells; anchoring would move every condition to its training mean). Scored against 1,000 fresh
cells of each condition drawn from the simulator's truth (``SimulationTruth.sample``),
log-normalized as the model normalizes: per condition (189) the effect (its mean minus the
mean of its cell type's controls at the same time), its correlation over the 100 genes the
truth moves most and its RMSE, and the mean profile's RMSE; averaged over conditions. Prints
one JSON line; ``sim.csv`` collects them.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from rnadiff import RNADiffusion
from rnadiff.datasets import simulate

HERE = Path(__file__).resolve().parent


def lognorm(X, target_sum: float) -> np.ndarray:
    X = sp.csr_matrix(X, dtype=np.float64)
    total = np.maximum(np.asarray(X.sum(axis=1)).ravel(), 1)
    return np.log1p((sp.diags(target_sum / total) @ X).toarray())


def main(world: int, batch: int) -> dict:
    torch.set_num_threads(1)
    adata, truth = simulate(40_000, n_genes=1000, seed=world, n_drugs=4, n_combinations=0)
    RNADiffusion.setup_anndata(
        adata, perturbation_key="perturbation", control="control", cell_type_key="cell_type",
        dose_key="dose", time_key="time", smiles_key="smiles",
    )  # fmt: skip
    model = RNADiffusion(adata, seed=0)
    t0 = time.perf_counter()
    model.train(batch_size=batch, seed=0, progress=False)
    train_s = time.perf_counter() - t0
    conds = adata.obs[["cell_type", "perturbation", "dose", "time"]].drop_duplicates()
    conds = conds.reset_index(drop=True)
    rows = [
        {
            "cell_type": r.cell_type,
            "perturbation": r.perturbation,
            "dose": float(r.dose),
            "time": float(r.time),
        }
        for r in conds.itertuples()
    ]
    gen = model.generate(rows, n_cells=200, seed=1, progress=False, anchor=False)
    assert model.preprocess.log_base in ("e", None) or float(model.preprocess.log_base) == np.e
    target = model.preprocess.target_sum
    G = gen.X.toarray() if sp.issparse(gen.X) else np.asarray(gen.X)
    genes = list(gen.var_names)
    o = gen.obs
    gkey = list(zip(o.cell_type.astype(str), o.perturbation.astype(str),
                    o.dose.astype(float), o.time.astype(float), strict=True))  # fmt: skip
    gen_means, ref_means = {}, {}
    for r in conds.itertuples():
        key = (str(r.cell_type), str(r.perturbation), float(r.dose), float(r.time))
        gen_means[key] = G[[k == key for k in gkey]].mean(axis=0)
        fresh = truth.sample(key[0], key[1], time=key[3], dose=key[2], n_cells=1000)
        fresh = fresh[:, genes]
        ref_means[key] = lognorm(fresh.X, target).mean(axis=0)
    corr, eff_rmse, prof_rmse = [], [], []
    for key, g in gen_means.items():
        ref = ref_means[key]
        prof_rmse.append(float(np.sqrt(np.mean((g - ref) ** 2))))
        if key[1] == "control":
            continue
        ctrl = (key[0], "control", 0.0, key[3])
        effect, true_effect = g - gen_means[ctrl], ref - ref_means[ctrl]
        eff_rmse.append(float(np.sqrt(np.mean((effect - true_effect) ** 2))))
        top = np.argsort(-np.abs(true_effect))[:100]
        corr.append(float(np.corrcoef(effect[top], true_effect[top])[0, 1]))
    return {
        "world": world, "batch": model.train_config.batch_size, "steps": model.step,
        "train_s": round(train_s, 1), "conditions": len(gen_means),
        "effect_corr_top100": float(np.mean(corr)), "effect_rmse": float(np.mean(eff_rmse)),
        "profile_rmse": float(np.mean(prof_rmse)),
    }  # fmt: skip


if __name__ == "__main__":
    record = main(int(sys.argv[1]), int(sys.argv[2]))
    print(json.dumps(record))
    csv = HERE / "sim.csv"
    old = pd.read_csv(csv) if csv.is_file() else pd.DataFrame()
    pd.concat([old, pd.DataFrame([record])], ignore_index=True).to_csv(csv, index=False)
