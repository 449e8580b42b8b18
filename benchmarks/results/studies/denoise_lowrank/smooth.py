"""Round 4: the ensemble's expression averaged over each cell's nearest cells afterwards,
``(1 - a) E + a mean_kNN(E)``, for gene-gene structure (issue 23). Same datasets, splits and
scores as ``run.py``; the kNN graph (15 cells, the cell included) on the first 30 principal
components of ``log1p(E)``.

    RNADIFF_DATA_DIR=../shared/data OMP_NUM_THREADS=1 .venv/bin/python \
        benchmarks/results/studies/denoise_lowrank/smooth.py DATASET SEED

Rows go to ``rows_round4_DATASET_SEED.csv`` beside this file.
"""

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from rnadiff.evaluation import _denoise as den

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import cases, fit, scored  # noqa: E402

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def smoothed(expr: np.ndarray, weight: float, *, k: int = 15, seed: int = 0) -> np.ndarray:
    pcs = den._pcs(np.log1p(expr), 30, seed)
    nearest = NearestNeighbors(n_neighbors=min(k, len(pcs))).fit(pcs).kneighbors(pcs)[1]
    return (1 - weight) * expr + weight * expr[nearest].mean(axis=1)


def main(name: str, seed: int) -> None:
    rows = []
    for rate, half, other in cases(name, seed):
        t0 = time.perf_counter()
        base = fit(half, seed, ensemble=3)
        seconds = time.perf_counter() - t0
        for w in WEIGHTS:
            method = f"rnadiff (ensemble of 3, smoothed {w})"
            rows += scored(smoothed(base, w, seed=seed), other, dict(dataset=name, seed=seed,
                           rate=rate, method=method, seconds=seconds))  # fmt: skip
    pd.DataFrame(rows).to_csv(HERE / f"rows_round4_{name}_{seed}.csv", index=False)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
