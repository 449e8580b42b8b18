"""scVI as a denoiser of counts (``scvi-tools``; run with ``.peers/scvi/bin/python``).

The scVI baseline of the denoising tasks (``benchmarks/_denoise_tasks.py``), on arrays rather
than the splits of the perturbation contract (``_contract.py``)::

    python run_scvi_denoise.py IN.npz OUT.npz [--seed N] [--max-steps N | --max-epochs N]
        [--threads N]

``IN.npz`` holds one or more count matrices ``counts_0``, ``counts_1``, ... (cells x genes,
integers). Each is fitted by a fresh ``SCVI`` model of its own (one import of scvi-tools for
them all, which takes ~10 s here) and denoised by its normalized expression:
``SCVI.setup_anndata(a, layer='counts')``, ``SCVI(a).train(...)``,
``get_normalized_expression(library_size=1e4, n_samples=25, return_mean=True)``: the decoder's
mean frequencies per 1e4 counts, averaged over 25 draws of the posterior ``q(z | x)`` (with
``n_samples=1`` it would be one random draw of z per cell).

``OUT.npz`` has ``expression_i`` (float64, cells x genes) and ``elbo_i`` (``elbo_train`` per
epoch) per input, and ``info`` (a JSON string: version, epochs, settings, train and predict
seconds, and per input the ELBO curve's end and :func:`_contract.convergence` of it).

Settings: scvi-tools defaults for the model (n_hidden 128, n_latent 10, 1 layer, dropout 0.1,
ZINB likelihood, gene-wise dispersion, observed library size) and the optimiser (Adam lr 1e-3,
batch 128, KL warm-up over 400 epochs, 90/10 train/validation split), no early stopping.
Epochs: scvi-tools' own rule ``min(round(20000 / n_cells * 400), 400)`` (400 up to 20k
cells), cut to ``ceil(max_steps / batches per epoch)`` by ``--max-steps`` (a budget in
optimiser steps, the same for every data size); ``--max-epochs`` sets them outright. The KL
warm-up stays scvi-tools' 400 epochs, as it does when its own rule gives fewer epochs (large
data): a run cut short ends with a KL weight below 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _contract
import numpy as np

ARCH = dict(n_hidden=128, n_latent=10, n_layers=1, dropout_rate=0.1, gene_likelihood="zinb")
LIBRARY_SIZE = 1e4
N_POSTERIOR = 25  # draws of z averaged by get_normalized_expression
BATCH_SIZE = 128


def default_epochs(n_cells: int) -> int:
    """scvi-tools' ``get_max_epochs_heuristic``: 400 epochs up to 20k cells, fewer above."""
    return int(min(round(20000 / n_cells * 400), 400))


def budget_epochs(n_cells: int, max_steps: int | None) -> int:
    """:func:`default_epochs`, at most ``max_steps`` optimiser steps (batch 128, 90% of the
    cells in training)."""
    epochs = default_epochs(n_cells)
    if max_steps:
        per_epoch = math.ceil(math.ceil(0.9 * n_cells) / BATCH_SIZE)
        epochs = min(epochs, math.ceil(max_steps / per_epoch))
    return epochs


def denoise(counts: np.ndarray, *, seed: int, epochs: int) -> dict:
    """Fit SCVI to ``counts`` and return its normalized expression, ELBO curve and times."""
    import anndata as ad
    import scvi

    scvi.settings.seed = seed  # seeds torch, numpy and python
    a = ad.AnnData(np.zeros(counts.shape, dtype=np.float32))
    a.layers["counts"] = counts.astype(np.float32)
    a.obs_names = [f"c{i}" for i in range(a.n_obs)]
    a.var_names = [f"g{j}" for j in range(a.n_vars)]
    scvi.model.SCVI.setup_anndata(a, layer="counts")
    model = scvi.model.SCVI(a, **ARCH)
    t0 = time.perf_counter()
    model.train(
        max_epochs=epochs,
        accelerator="cpu",
        train_size=0.9,
        batch_size=BATCH_SIZE,
        early_stopping=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    train_s, t0 = time.perf_counter() - t0, time.perf_counter()
    expression = model.get_normalized_expression(
        a, library_size=LIBRARY_SIZE, n_samples=N_POSTERIOR, return_mean=True, return_numpy=True
    )
    predict_s = time.perf_counter() - t0
    elbo = model.history["elbo_train"].astype(float).to_numpy().ravel()
    return {
        "expression": np.asarray(expression, dtype=np.float64),
        "elbo": elbo,
        "epochs": epochs,
        "train_s": train_s,
        "predict_s": predict_s,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("inp")
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    _contract.limit_threads(args.threads)
    import logging

    import scvi

    for name in ("scvi", "lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with np.load(args.inp) as f:
        inputs = [f[f"counts_{i}"] for i in range(len(f.files))]
    out, fits = {}, []
    for i, counts in enumerate(inputs):
        epochs = args.max_epochs or budget_epochs(len(counts), args.max_steps)
        fit = denoise(counts, seed=args.seed, epochs=epochs)
        out[f"expression_{i}"] = fit["expression"]
        out[f"elbo_{i}"] = fit["elbo"]
        check = _contract.convergence(fit["elbo"])
        fits.append(
            {
                "n_cells": int(counts.shape[0]),
                "epochs": fit["epochs"],
                "train_s": fit["train_s"],
                "predict_s": fit["predict_s"],
                "elbo_first": float(fit["elbo"][0]),
                "elbo_last": float(fit["elbo"][-1]),
                **{f"convergence_{k}": v for k, v in check.items()},
            }
        )
    info = {
        "version": f"scvi-tools {scvi.__version__}",
        "settings": {
            **ARCH,
            "batch_size": BATCH_SIZE,
            "train_size": 0.9,
            "early_stopping": False,
            "epochs_rule": "min(round(20000 / n_cells * 400), 400)",
            "max_steps": args.max_steps,
            "max_epochs": args.max_epochs,
            "library_size": LIBRARY_SIZE,
            "n_samples": N_POSTERIOR,
            "seed": args.seed,
        },
        "fits": fits,
    }
    np.savez(args.out, info=np.array(json.dumps(info)), **out)


if __name__ == "__main__":
    main()
