"""Denoising benchmark: Zeisel 2015 deep counts, thinned, denoised, compared with the deep truth.

For each seed: 100 of the 500 deeply sequenced cortex cells (7k-44k UMIs per cell) are held
out; rnadiff is trained on the other 400 (the reference, at full depth, default settings).
The held-out cells' counts are thinned (each UMI kept with probability ``rate``, binomial)
and then:

- left as they are (``thinned``);
- replaced by the mean of their 15 nearest reference cells (30 principal components of the
  reference's log values): a kNN regression onto the same reference;
- smoothed by the mean of their 15 nearest thinned neighbours (no reference; MAGIC-like,
  one step);
- denoised by rnadiff (:meth:`rnadiff.RNADiffusion.denoise`), with ``sigma="auto"`` (each
  cell's counting noise beyond the reference's, from its depth) and at fixed ``sigma``;
- denoised by rnadiff trained with half of each batch corrupted by thinning the reference
  cells' counts (``TrainConfig(thinning=0.5)``), ``sigma="auto"``.

Each is compared with the held-out cells' deep log-normalized values (1e4 per cell, log1p,
the model's 2000 genes): mean per-cell Pearson correlation over genes, mean per-gene Pearson
correlation over cells (genes that vary in both), and mean squared error.

    RNADIFF_DATA_DIR=../shared/data .venv/bin/python benchmarks/denoise_zeisel.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from rnadiff import RNADiffusion, TrainConfig, datasets

OUT = Path("benchmarks/results/denoise")
RATES = (0.05, 0.1, 0.25)
SIGMAS = (0.5, 1.0, 2.0)
THINNING = 0.5  # TrainConfig.thinning of the second model
K = 15


def _log(counts: np.ndarray) -> np.ndarray:
    return np.log1p(counts / np.maximum(counts.sum(1, keepdims=True), 1) * 1e4)


def scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    cells = [np.corrcoef(p, t)[0, 1] for p, t in zip(pred, truth, strict=True)]
    ok = (pred.std(0) > 0) & (truth.std(0) > 0)
    genes = [np.corrcoef(pred[:, j], truth[:, j])[0, 1] for j in np.flatnonzero(ok)]
    return {
        "cell_pearson": float(np.mean(cells)),
        "gene_pearson": float(np.mean(genes)),
        "mse": float(((pred - truth) ** 2).mean()),
    }


def seed_rows(deep: ad.AnnData, seed: int, rates=RATES, sigmas=SIGMAS) -> list[dict]:
    x = deep.X.toarray() if sp.issparse(deep.X) else np.asarray(deep.X)
    rng = np.random.default_rng(seed)
    order = rng.permutation(deep.n_obs)
    test, ref = np.sort(order[:100]), np.sort(order[100:])
    reference = ad.AnnData(X=x[ref].astype(np.float32), var=deep.var.copy())
    RNADiffusion.setup_anndata(reference)
    model = RNADiffusion(reference, seed=seed)
    t0 = time.perf_counter()
    model.train(config=TrainConfig(seed=seed, calibration_cells=0), progress=False)
    train_s = time.perf_counter() - t0
    # the same, trained with half of each batch corrupted by count thinning
    thinned = RNADiffusion(reference, seed=seed)
    thin_config = TrainConfig(seed=seed, calibration_cells=0, thinning=THINNING)
    thinned.train(config=thin_config, progress=False)
    cols = deep.var_names.get_indexer(model.genes)
    truth = _log(x[test])[:, cols]
    ref_log = _log(x[ref])[:, cols]
    pca = PCA(n_components=30, random_state=seed).fit(ref_log)
    rows = []
    for rate in rates:
        thin = rng.binomial(x[test].astype(np.int64), rate).astype(np.float32)
        shallow_log = _log(thin)[:, cols]
        shallow = ad.AnnData(X=thin, var=deep.var.copy())
        shallow.obs_names = deep.obs_names[test]
        preds = {"thinned (no denoising)": shallow_log}
        near = NearestNeighbors(n_neighbors=K).fit(pca.transform(ref_log))
        idx = near.kneighbors(pca.transform(shallow_log), return_distance=False)
        preds[f"kNN mean of {K} reference cells"] = ref_log[idx].mean(1)
        own = pca.transform(shallow_log)
        idx = NearestNeighbors(n_neighbors=K).fit(own).kneighbors(own, return_distance=False)
        preds[f"kNN smoothing, {K} thinned neighbours"] = shallow_log[idx].mean(1)
        t0 = time.perf_counter()
        auto = model.denoise(shallow, progress=False)  # each cell's counting noise
        seconds = time.perf_counter() - t0
        preds["rnadiff, sigma auto"] = auto.X
        auto_sigma = float(np.median(auto.obs["rnadiff_sigma"]))
        for sigma in sigmas:
            preds[f"rnadiff, sigma {sigma:g}"] = model.denoise(
                shallow, sigma=sigma, progress=False
            ).X
        preds[f"rnadiff, thinning {THINNING:g}, sigma auto"] = thinned.denoise(
            shallow, progress=False
        ).X
        for method, pred in preds.items():
            row = {"seed": seed, "rate": rate, "method": method, **scores(pred, truth)}
            rows.append(row)
        rows[-len(preds)]["auto_sigma_median"] = auto_sigma
        rows[-1]["denoise_s"] = seconds
    rows[-1]["train_s"] = train_s
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)
    deep = datasets.load("zeisel2015")
    rows = pd.DataFrame([r for s in range(args.seeds) for r in seed_rows(deep, s)])
    rows.to_csv(args.out / "rows.csv", index=False)
    metrics = ["cell_pearson", "gene_pearson", "mse"]
    summary = rows.groupby(["rate", "method"], sort=False)[metrics].mean()
    lines = [
        f"# Denoising Zeisel 2015 thinned cells ({args.seeds} seeds; "
        "`benchmarks/denoise_zeisel.py`)",
        "",
        "| kept UMIs | method | per-cell Pearson | per-gene Pearson | MSE |",
        "|---|---|---|---|---|",
    ]
    for (rate, method), r in summary.iterrows():
        lines.append(
            f"| {rate:.0%} | {method} | {r.cell_pearson:.3f} | {r.gene_pearson:.3f} | {r.mse:.3f} |"
        )
    auto = rows.dropna(subset=["auto_sigma_median"]).groupby("rate")["auto_sigma_median"].mean()
    lines += [
        "",
        "median `sigma` chosen by `auto`: "
        + ", ".join(f"{r:.0%}: {v:.2f}" for r, v in auto.items()),
    ]
    times = rows.dropna(subset=["train_s"]) if "train_s" in rows else rows.iloc[:0]
    if len(times):
        lines += ["", f"rnadiff training: {times.train_s.mean():.0f} s per seed (400 cells)"]
    text = "\n".join(lines) + "\n"
    (args.out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
