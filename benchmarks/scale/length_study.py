"""Training length at scale: does a run of N steps on a large file need more passes?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale/length_study.py --size 1M
        --steps 4000,16000 [--batch-size 128] [--seed 0] [--ref 100k] [--cells-per-group 200]
        [--ref-cells N] [--width W] [--precision fp32|bf16] [--out DIR]

For each step count, in a fresh process (``--one``): the model is built on the synthetic file
(``make_files.py``; read backed), trained for exactly that many steps at the default batch or
``--batch-size`` (``model.train(max_steps=N)``, calibration included), and 200 cells of each of
the 100 (perturbation, cell type) pairs are generated, the network's own cells
(``anchor=False``: anchored generation would move every pair to its training mean, whatever the
training; rows measured before 2026-12-07 evening predate anchoring). Quality against an
independent draw of the same transcriptome (the ``--ref`` file, never trained on; 1,000 cells
per pair at 100k; ``--ref-cells N``: a random N of its cells, so that ``--size 100k --ref 1M``
fits in memory): per pair, the RMSE of the generated mean log-normalized profile against the
reference's and of the perturbation's effect (pair mean minus the cell type's control mean)
against the reference effect, and the effect's correlation over the 100 genes the reference
says it moves most; each averaged over pairs. The reference is normalized as the model
normalizes (each cell's total over the file's genes, the model's ``target_sum`` and log base).
A noise floor: the same metrics for a second 200-cell draw of the reference file against the
rest of it. Rows are appended to ``length_study.csv`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _rnadiff_run import vm_hwm_mib  # noqa: E402
from make_files import CELL_TYPE_KEY, CONTROL, DEFAULT_DATA, PERTURBATION_KEY  # noqa: E402

DEFAULT_OUT = HERE.parent / "results" / "scale"


def lognorm(X, target_sum: float, log_factor: float) -> np.ndarray:
    """log1p of each cell's counts scaled to ``target_sum``, in the model's log base."""
    X = sp.csr_matrix(X, dtype=np.float64)
    total = np.asarray(X.sum(axis=1)).ravel()
    X = sp.diags(target_sum / np.maximum(total, 1)) @ X
    return np.log1p(X.toarray()) / log_factor


def group_means(obs: pd.DataFrame, Y: np.ndarray) -> dict[tuple[str, str], np.ndarray]:
    keys = list(zip(obs[PERTURBATION_KEY].astype(str), obs[CELL_TYPE_KEY].astype(str), strict=True))
    frame = pd.DataFrame(Y)
    frame.index = pd.MultiIndex.from_tuples(keys)
    return {k: v.to_numpy() for k, v in frame.groupby(level=[0, 1])}


def scores(gen: dict, ref: dict, top: int = 100) -> dict:
    """Means over pairs: the RMSE of the mean profile, and of the perturbation's effect (the
    pair's mean minus its cell type's control mean); the effect's correlation over the ``top``
    genes the reference says it moves most (a perturbation moves ~2% of the genes: over all
    genes the correlation would measure noise)."""
    rmse, effect_rmse, corr = [], [], []
    for (pert, ctype), profile in gen.items():
        truth = ref[(pert, ctype)].mean(axis=0)
        mean = profile.mean(axis=0)
        rmse.append(float(np.sqrt(np.mean((mean - truth) ** 2))))
        if pert != CONTROL:
            effect = mean - gen[(CONTROL, ctype)].mean(axis=0)
            true_effect = truth - ref[(CONTROL, ctype)].mean(axis=0)
            effect_rmse.append(float(np.sqrt(np.mean((effect - true_effect) ** 2))))
            moved = np.argsort(-np.abs(true_effect))[:top]
            corr.append(float(np.corrcoef(effect[moved], true_effect[moved])[0, 1]))
    return {
        "profile_rmse": float(np.mean(rmse)),
        "effect_rmse": float(np.mean(effect_rmse)),
        f"effect_corr_top{top}": float(np.mean(corr)),
    }


def one(args) -> dict:
    """One trained model and its scores (run in a fresh process)."""
    import torch

    from rnadiff import ModelConfig, NetworkConfig, RNADiffusion

    torch.set_num_threads(args.threads)
    record: dict = {"size": args.size, "steps": args.one, "threads": args.threads}
    record["seed"] = args.seed
    t0 = time.perf_counter()
    adata = ad.read_h5ad(args.data / f"synthetic_{args.size}.h5ad", backed="r")
    RNADiffusion.setup_anndata(
        adata, perturbation_key=PERTURBATION_KEY, control=CONTROL, cell_type_key=CELL_TYPE_KEY
    )
    config = ModelConfig(network=NetworkConfig(width=args.width)) if args.width else None
    model = RNADiffusion(adata, config=config, seed=args.seed)
    record["width"] = model.config.network.width
    record["preprocess_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    from rnadiff import TrainConfig

    train = TrainConfig(precision=args.precision) if args.precision != "fp32" else None
    model.train(
        max_steps=args.one,
        batch_size=args.batch_size,
        seed=args.seed,
        config=train,
        progress=False,
    )
    record["precision"] = args.precision
    record["train_s"] = time.perf_counter() - t0
    record["batch_size"] = model.train_config.batch_size
    record["passes"] = args.one * record["batch_size"] / adata.n_obs
    obs = adata.obs
    pairs = [
        {PERTURBATION_KEY: p, CELL_TYPE_KEY: t}
        for p in obs[PERTURBATION_KEY].cat.categories
        for t in obs[CELL_TYPE_KEY].cat.categories
    ]
    t0 = time.perf_counter()
    gen = model.generate(pairs, n_cells=args.cells_per_group, progress=False, seed=1, anchor=False)
    record["generate_s"] = time.perf_counter() - t0
    ref = ad.read_h5ad(args.data / f"synthetic_{args.ref}.h5ad", backed="r")
    rows = np.arange(ref.n_obs)
    if args.ref_cells and args.ref_cells < ref.n_obs:
        rows = np.sort(np.random.default_rng(0).choice(ref.n_obs, args.ref_cells, replace=False))
    ref = ref[rows].to_memory()
    genes = [g for g in gen.var_names if g in set(ref.var_names)]
    base = model.preprocess.log_base
    factor = float(np.log(np.e if base == "e" else float(base)))
    Y = lognorm(ref.X, model.preprocess.target_sum, factor)[:, ref.var_names.get_indexer(genes)]
    G = np.asarray(gen[:, genes].X.toarray() if sp.issparse(gen.X) else gen[:, genes].X)
    record |= scores(group_means(gen.obs, G), group_means(ref.obs, Y))
    # the floor: 200 reference cells per pair against the other reference cells
    rng = np.random.default_rng(0)
    keys = ref.obs[PERTURBATION_KEY].astype(str) + "|" + ref.obs[CELL_TYPE_KEY].astype(str)
    pick = np.zeros(ref.n_obs, bool)
    for _, where in keys.groupby(keys).indices.items():
        pick[rng.choice(where, min(args.cells_per_group, len(where) // 2), replace=False)] = True
    floor = scores(group_means(ref.obs[pick], Y[pick]), group_means(ref.obs[~pick], Y[~pick]))
    record |= {f"floor_{k}": v for k, v in floor.items()}
    record["ref"] = f"{args.ref} ({ref.n_obs} cells)"
    record |= {"n_cells": adata.n_obs, "genes_scored": len(genes), "peak_rss_mib": vm_hwm_mib()}
    return record


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="1M")
    p.add_argument("--steps", default="4000,16000")
    p.add_argument("--ref", default="100k", help="the independent file the scores use")
    p.add_argument("--cells-per-group", type=int, default=200)
    p.add_argument("--ref-cells", type=int, default=None, help="a random subset of --ref")
    p.add_argument("--width", type=int, default=None, help="the denoiser's hidden width")
    p.add_argument("--batch-size", type=int, default=None, help="default: TrainConfig's")
    p.add_argument("--precision", default="fp32", help="TrainConfig.precision: fp32 or bf16")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="the model's and its training's seed")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one is not None:
        print(json.dumps(one(args)))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    csv = args.out / "length_study.csv"
    for steps in (int(s) for s in args.steps.split(",")):
        cmd = [sys.executable, __file__, "--one", str(steps), "--size", args.size]
        cmd += ["--ref", args.ref, "--threads", str(args.threads), "--data", str(args.data)]
        cmd += ["--cells-per-group", str(args.cells_per_group)]
        cmd += ["--batch-size", str(args.batch_size)] if args.batch_size else []
        cmd += ["--seed", str(args.seed)]
        cmd += ["--ref-cells", str(args.ref_cells)] if args.ref_cells else []
        cmd += ["--width", str(args.width)] if args.width else []
        cmd += ["--precision", args.precision]
        env = os.environ | {"OMP_NUM_THREADS": str(args.threads), "PYTHONWARNINGS": "ignore"}
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            print(done.stderr[-2000:], file=sys.stderr)
            continue
        record = json.loads(done.stdout.strip().splitlines()[-1])
        record |= {"wall_s": time.perf_counter() - t0, "measured_at": time.strftime("%F %T")}
        record["generation"] = "network (anchor=False)"
        old = pd.read_csv(csv) if csv.is_file() else pd.DataFrame()
        pd.concat([old, pd.DataFrame([record])], ignore_index=True).to_csv(csv, index=False)
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    sys.exit(main())
