"""scVI latent-arithmetic peer runner (``scvi-tools``; run with ``.peers/scvi/bin/python``).

scVI (Lopez et al. 2018) is a VAE on raw counts, not a perturbation model; latent arithmetic
(the scGen recipe on scVI's latent space) makes it a perturbation baseline, displayed as
"scvi (latent arithmetic)":

1. ``SCVI.setup_anndata(train, layer='counts', batch_key=--batch-key)``; train ``SCVI`` on
   every training cell (perturbation and cell type are *not* covariates, so they stay in z).
2. ``z`` = the posterior mean ``qz.loc`` of every training cell. For each target, the shift is
   the mean over training contexts that hold both labels (cell types; else batches; else one
   context) of ``mean(z | target) - mean(z | control)``, equal weight per context.
3. For each source cell, ``z_src = qz.loc + shift``; decode with the generative path that
   ``SCVI.get_normalized_expression(..., library_size=1e4)`` uses (``module.inference`` ->
   ``module._get_generative_input`` -> ``module.generative`` -> ``px.get_normalized('scale')
   * 1e4``) with ``z`` replaced by the shifted latent, the source cell's own library and batch.
   The normalized expression (the decoder's mean frequencies, scaled to 1e4) is then log1p'ed:
   a denoised *mean* per cell, so its cell-to-cell spread is smaller than real cells', and
   log1p of a mean exceeds the mean of log1p for sparse genes. X is this prediction.
4. ``layers['zinb_sample']``: one draw of counts per cell from the same decoded ZINB (the
   source cell's library, ``torch.manual_seed(--seed)``), log-normalized like the data
   (1e4, log1p): cells with count noise, for the population metrics.

Settings: scvi-tools defaults for the model (n_hidden 128, n_latent 10, 1 layer, dropout 0.1,
ZINB likelihood, gene-wise dispersion) and the optimiser (Adam lr 1e-3, weight decay 1e-6,
batch 128, KL warm-up over 400 epochs, 90/10 train/validation split).

- ``quick``: 200 epochs, no early stopping (~25 s on the Kang task).
- ``full``: scvi-tools' own epoch rule ``min(round(20000 / n_cells * 400), 400)`` (400 for
  <= 20k cells), no early stopping (~50 s on the Kang task).

``--max-epochs`` overrides the epochs. The loss curve is ``history['elbo_train']`` per epoch.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _contract
import numpy as np

ARCH = dict(n_hidden=128, n_latent=10, n_layers=1, dropout_rate=0.1, gene_likelihood="zinb")
LIBRARY_SIZE = 1e4


def _epochs(budget: str, n_cells: int) -> int:
    if budget == "quick":
        return 200
    return int(min(round(20000 / n_cells * 400), 400))  # scvi-tools' default rule


def run(task: _contract.Task) -> _contract.Prediction:
    import logging

    import scvi
    import torch

    for name in ("scvi", "lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    args = task.args
    scvi.settings.seed = args.seed
    train, source = task.train.copy(), task.source.copy()
    epochs = args.max_epochs or _epochs(args.budget, train.n_obs)
    scvi.model.SCVI.setup_anndata(train, layer="counts", batch_key=args.batch_key)
    model = scvi.model.SCVI(train, **ARCH)
    with _contract.Timer() as t_train:
        model.train(
            max_epochs=epochs,
            accelerator="cpu",
            train_size=0.9,
            batch_size=128,
            early_stopping=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
    elbo = model.history["elbo_train"].astype(float).to_numpy().ravel().tolist()

    with _contract.Timer() as t_pred, torch.no_grad():
        z_train = model.get_latent_representation(train, give_mean=True)
        shifts = {
            t: np.mean(_contract.context_shifts(task, z_train, t), axis=0) for t in task.targets
        }
        torch.manual_seed(args.seed)
        blocks = [_decode_shifted(model, source, shifts[t]) for t in task.targets]
    X = np.log1p(np.concatenate([b[0] for b in blocks], axis=0)).astype(np.float32)
    sampled = _contract.log_normalize(np.concatenate([b[1] for b in blocks], axis=0))
    n_ctx = len(_contract.context_shifts(task, z_train, task.targets[0]))
    notes = (
        f"scVI latent arithmetic: SCVI on layers['counts'] ({epochs} epochs), z = qz mean, "
        f"shift = mean over {n_ctx} training context(s) of mean(z|target) - mean(z|control), "
        f"decoded through scVI's generative path with the shifted z and the source cell's "
        f"library (px scale x 1e4, as get_normalized_expression(library_size=1e4)), then log1p; "
        f"outputs are per-cell decoder means (denoised, less spread than real cells)"
    )
    return _contract.Prediction(
        X=X,
        version=f"scvi-tools {scvi.__version__}",
        train_s=t_train.s,
        predict_s=t_pred.s,
        epochs=epochs,
        notes=notes,
        settings={
            **ARCH,
            "max_epochs": epochs,
            "batch_size": 128,
            "train_size": 0.9,
            "early_stopping": False,
            "lr": 1e-3,
            "batch_key": args.batch_key,
            "library_size": LIBRARY_SIZE,
            "z": "qz mean",
        },
        layers={"zinb_sample": sampled},
        history=elbo,
        history_unit="epoch (elbo_train)",
    )


def _decode_shifted(model, adata, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``get_normalized_expression(adata, library_size=1e4)`` with ``z = qz.loc + shift``, and
    one draw of counts per cell from the decoded ZINB (the source cell's own library)."""
    import torch

    adata = model._validate_anndata(adata)
    module = model.module
    module.eval()
    delta = torch.as_tensor(shift, dtype=torch.float32)
    means, draws = [], []
    for tensors in model._make_data_loader(adata=adata, batch_size=256, shuffle=False):
        inf = module.inference(**module._get_inference_input(tensors))
        inf = {**inf, "z": inf["qz"].loc + delta}
        gen = module.generative(**module._get_generative_input(tensors, inf))
        means.append((gen["px"].get_normalized("scale") * LIBRARY_SIZE).cpu().numpy())
        draws.append(gen["px"].sample().cpu().numpy())
    return np.concatenate(means, axis=0), np.concatenate(draws, axis=0)


if __name__ == "__main__":
    _contract.main("scvi", run)
