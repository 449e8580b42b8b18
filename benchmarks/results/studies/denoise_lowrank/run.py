"""Self-supervised denoiser: a low-rank read-out or a wider neighbourhood, for gene-gene
structure (issue 23), chosen on data the denoising benchmark never scores.

Datasets (none of them in ``denoise_zeisel`` / ``denoise_kang_ctrl`` / ``denoise_sim``):
- ``kang9k``: the 9k-gene Kang copy, its 1,000 IFN-beta stimulated cells (the benchmark's Kang
  file holds control cells only), the 1,000 genes with most counts; thinned to 10% and 20%.
- ``papalexi``: 3,000 random ECCITE-seq THP-1 cells (299 genes, ~200 UMIs per cell: shallow
  already); thinned to 50% and kept whole (100%), which gives the depths of the benchmark's
  10-20% Kang cells.
- ``sim``: the simulator's deep cells as ``denoise_sim`` draws them, with seeds 10 + seed
  (the benchmark uses seeds 0-2); thinned to 10% and 20%.

Each shallow matrix is split into MCV halves as the benchmark does; a method denoises one half
and is scored on the other: ``mcv_loss`` (lower is better) and ``gene_gene_corr_mcv``.
Variants of ``fit_denoiser``: the default, a low-rank read-out (``bottleneck`` 8, 16, 32)
and 30 neighbours; MAGIC and kNN smoothing as references.

Run (one dataset and seed per process; two side by side with OMP_NUM_THREADS=1):
    RNADIFF_DATA_DIR=../shared/data OMP_NUM_THREADS=1 .venv/bin/python \
        benchmarks/results/studies/denoise_lowrank/run.py DATASET SEED [round2|round3]
Rows go to ``rows[_ROUND]_DATASET_SEED.csv`` beside this file.
"""

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from rnadiff import datasets
from rnadiff.evaluation import _denoise as den
from rnadiff.model._self_denoise import fit_denoiser

HERE = Path(__file__).resolve().parent
ROUND1 = {
    "default": {},
    "bottleneck 8": {"bottleneck": 8},
    "bottleneck 16": {"bottleneck": 16},
    "bottleneck 32": {"bottleneck": 32},
    "neighbours 30": {"neighbours": 30},
}
ROUND2 = {  # after round 1: training length, regularization, size, an ensemble
    "default": {},
    "patience 24": {"patience": 24},
    "dropout 0.3": {"dropout": 0.3},
    "width 512": {"width": 512},
    "lr 3e-4": {"lr": 3e-4},
    "ensemble of 3": {"ensemble": 3},
}
ROUND3 = {  # after round 2: the ensemble and the lower learning rate, alone and together
    "default": {},
    "lr 3e-4": {"lr": 3e-4},
    "ensemble of 3": {"ensemble": 3},
    "ensemble of 5": {"ensemble": 5},
    "ensemble of 3, lr 3e-4": {"ensemble": 3, "lr": 3e-4},
}
ROUNDS = {"": ROUND1, "round2": ROUND2, "round3": ROUND3}


def dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def load(name: str, seed: int) -> tuple[np.ndarray, tuple[float, ...]]:
    if name == "kang9k":
        adata = datasets.load("kang2018_ifnb_9k")
        adata = adata[(adata.obs["group_id"] == "stim").to_numpy()]
        x = dense(adata.X)
        genes = np.sort(np.argsort(-x.sum(0), kind="stable")[:1000])
        return x[:, genes], (0.1, 0.2)
    if name == "papalexi":
        adata = datasets.load("papalexi2021")
        cells = np.sort(np.random.default_rng(seed).choice(adata.n_obs, 3000, replace=False))
        x = dense(adata[cells].X)
        return x[:, x.sum(0) > 0], (0.5, 1.0)
    if name == "sim":
        adata, _ = datasets.simulate(2000, seed=10 + seed, n_genes=500, library_median=20000.0)
        x = dense(adata.X)
        return x[:, x.sum(0) > 0], (0.1, 0.2)
    raise SystemExit(f"unknown dataset {name!r}")


def fit(counts, seed: int, ensemble: int = 1, **kw) -> np.ndarray:
    """Expression of ``counts`` by ``fit_denoiser`` (the mean of ``ensemble`` seeds)."""
    fits = [fit_denoiser(counts, seed=seed + 100 * i, **kw)[0](counts) for i in range(ensemble)]
    return np.mean(fits, axis=0)


def cases(name: str, seed: int):
    """``(rate, half, other)`` per depth of ``name``: the shallow counts' two MCV halves (the
    one a method denoises, the one it is scored on), cells with counts in the first only."""
    deep, rates = load(name, seed)
    for r, rate in enumerate(rates):
        shallow = den.thin(deep, rate, seed=seed * 1000 + r) if rate < 1 else deep
        shallow = shallow[shallow.sum(1) > 0]
        half, other = den.mcv_split(shallow, p=0.5, seed=seed * 1000 + 500 + r)
        usable = half.sum(1) > 0
        yield rate, half[usable], other[usable]


def scored(expr, other, row: dict) -> list[dict]:
    """One row per score of ``expr`` against the held-out half ``other`` (printed too)."""
    scores = {
        "mcv_loss": den.mcv_loss(expr, other),
        "gene_gene_corr_mcv": den.gene_correlation_recovery_mcv(expr, other),
    }
    print(*(row[k] for k in ("dataset", "seed", "rate", "method")), scores,
          f"{row['seconds']:.0f} s", flush=True)  # fmt: skip
    return [row | {"metric": metric, "value": value} for metric, value in scores.items()]


def main(name: str, seed: int, variants: dict, tag: str) -> None:
    rows = []
    for rate, half, other in cases(name, seed):
        methods = {
            f"rnadiff ({v})": (lambda c, kw=kw: fit(c, seed, **kw)) for v, kw in variants.items()
        }
        methods["magic"] = lambda c: den.magic_expression(c, seed=seed)
        methods["knn_smoothing"] = lambda c: den.knn_smoothing(c, seed=seed)
        for method, fn in methods.items():
            t0 = time.perf_counter()
            expr = fn(half)
            seconds = time.perf_counter() - t0
            rows += scored(expr, other, dict(dataset=name, seed=seed, rate=rate, method=method,
                                             seconds=seconds))  # fmt: skip
    pd.DataFrame(rows).to_csv(HERE / f"rows{tag}_{name}_{seed}.csv", index=False)


if __name__ == "__main__":
    rnd = sys.argv[3] if len(sys.argv) > 3 else ""
    main(sys.argv[1], int(sys.argv[2]), ROUNDS[rnd], f"_{rnd}" if rnd else "")
