"""How faithful is generation from noise for a condition seen in training? (Kang 2018)

For each leave-one-cell-type-out fold (seed 0): train rnadiff with the benchmark's defaults,
generate control cells of the held-out type (a condition in the training data: only the
stimulated cells of that type are held out) and compare them with the real control cells of
that type, the cells the model was trained on. For scale, the real control cells of the most
similar other type (by mean expression) are compared the same way. Columns: E-distance and R²
of all gene means (the benchmark's metrics code), the total variance of real and generated
cells in the 30 principal components of all training cells, the fraction of exact zeros, and the
largest per-gene mean errors, and the mean excess of seven interferon-response genes
(``ifn_leak``: these control cells should not express them).

``--p-mean``, ``--max-steps``, ``--width``, ``--thinning`` and ``--guidance`` change the training
noise levels, the training length, the network width, the share of count-thinning corruption
in training and the classifier-free guidance of the generation;
such runs are labelled by ``--tag`` and appended to ``variants.csv`` instead of ``rows.csv``.

    OMP_NUM_THREADS=1 RNADIFF_DATA_DIR=../shared/data .venv/bin/python \\
        benchmarks/generation_fidelity.py --folds "B cells,CD4 T cells"
    .venv/bin/python benchmarks/generation_fidelity.py --folds "B cells" --p-mean 1 \\
        --guidance 2 --tag "p_mean 1, guidance 2"
    .venv/bin/python benchmarks/generation_fidelity.py --summary-only
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.decomposition import PCA

from rnadiff import datasets
from rnadiff._config import ModelConfig, TrainConfig
from rnadiff.data import _splits as splits
from rnadiff.evaluation._benchmark import BenchConfig, prepare
from rnadiff.evaluation._design_tasks import _model_order
from rnadiff.evaluation._metrics import response_metrics
from rnadiff.model import RNADiffusion

OUT = Path("benchmarks/results/generation_fidelity")
IFN_GENES = ("ISG15", "CXCL10", "IFIT1", "IFIT3", "MX1", "IFI6", "ISG20")


def bench_config(p_mean=None, max_steps=None, width=None, thinning=None) -> BenchConfig:
    """The benchmark's defaults, with the study's changes."""
    model, train = ModelConfig(), TrainConfig()
    if p_mean is not None:
        diffusion = dataclasses.replace(model.diffusion, p_mean=p_mean)
        model = dataclasses.replace(model, diffusion=diffusion)
    if width is not None:
        model = dataclasses.replace(model, network=dataclasses.replace(model.network, width=width))
    if max_steps is not None:
        train = dataclasses.replace(train, max_steps=max_steps)
    if thinning is not None:
        train = dataclasses.replace(train, thinning=thinning)
    return BenchConfig(model=model, train=train)


def fold_row(split, seed: int, config: BenchConfig | None = None, guidance: float = 1.0) -> dict:
    config = config or BenchConfig()
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
    generated = model.generate(
        cond, n_cells=real.shape[0], seed=seed, guidance=guidance, progress=False
    )
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
    ifn = np.isin(genes, IFN_GENES)
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
        "ifn_leak": float(diff[ifn].mean()),
        "largest_mean_errors": "; ".join(
            f"{genes[i]} {diff[i]:+.2f} (real {real.mean(0)[i]:.2f})" for i in worst
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folds", default=None, help="comma-separated cell types (all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--p-mean", type=float, default=None, help="training noise level mean")
    parser.add_argument("--max-steps", type=int, default=None, help="training steps")
    parser.add_argument("--width", type=int, default=None, help="hidden width of the network")
    parser.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance")
    parser.add_argument("--thinning", type=float, default=None, help="TrainConfig.thinning")
    parser.add_argument("--tag", default=None, help="label of a variant run (variants.csv)")
    parser.add_argument("--summary-only", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    options = [args.p_mean, args.max_steps, args.width, args.thinning]
    changed = options != [None] * 4 or args.guidance != 1.0
    if changed and not args.tag:
        raise SystemExit("a run that changes the defaults needs --tag")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / ("variants.csv" if args.tag else "rows.csv")
    if not args.summary_only:
        torch.set_num_threads(1)
        config = bench_config(args.p_mean, args.max_steps, args.width, args.thinning)
        wanted = None if args.folds is None else set(args.folds.split(","))
        done = set()
        if path.exists():
            old = pd.read_csv(path)
            if args.tag:
                old = old[old.tag == args.tag]
            done = set(zip(old.fold, old.seed, strict=True))
        for split in splits.kang_loo_celltype(datasets.load("kang2018_ifnb"), seed=args.seed):
            if (wanted is not None and split.fold not in wanted) or (
                (split.fold, args.seed) in done
            ):
                continue
            row = fold_row(split, args.seed, config, args.guidance)
            if args.tag:
                row = {"tag": args.tag, **row}
            pd.DataFrame([row]).to_csv(path, mode="a", header=not path.exists(), index=False)
            print(f"{split.fold} done", flush=True)
    text = "# Generation fidelity for a seen condition (`benchmarks/generation_fidelity.py`)\n\n"
    text += pd.read_csv(args.out / "rows.csv").round(3).to_csv(index=False)
    if (args.out / "variants.csv").exists():
        variants = pd.read_csv(args.out / "variants.csv")
        keep = ["tag", "fold", "seed", "edistance_generated", "r2_mean_all_generated"]
        keep += ["pc_variance_real", "pc_variance_generated", "zeros_generated", "ifn_leak"]
        text += "\n## Variants (same folds and seeds, one change each)\n\n"
        text += variants[keep].round(3).to_csv(index=False)
    (args.out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
