"""scGen peer runner (pertpy's JAX/flax ``Scgen``; run with ``.peers/scgen/bin/python``).

scGen (Lotfollahi et al. 2019): a VAE on log-normalized expression; the perturbation is the
latent difference mean(stim) - mean(ctrl) over all training cells (cell types balanced by
resampling), added to the latents of the source cells, then decoded.

Settings (architecture as scGen / pertpy defaults: n_hidden=800, n_latent=100, n_layers=2,
dropout 0.2, Adam lr 1e-3; 90/10 train/validation split of the training cells):

- ``quick``: 60 epochs, batch size 64, no early stopping (~80 s training on the Kang task).
- ``full``:  at most 100 epochs, batch size 32, early stopping on the validation ELBO with
  patience 25 (the scGen / pertpy tutorial's settings; at most ~4 min on the Kang task). On the
  Kang CD14 fold the validation ELBO is best at epoch 9, so training stops at epoch 34 and
  scores below ``quick``: that is the recommended protocol's result, reported as such.

Several targets: one training, then ``predict(stim_key=target)`` per target. The labels key
is the context (cell type, else batch, else one shared label).

``--max-epochs`` overrides the epochs. Prediction maps exactly the source cells
(``adata_to_predict``); pertpy's ``predict`` resamples with an unseeded
``np.random.default_rng()``, which is replaced by a generator derived from ``--seed`` during
the call. Decoded values below 0 (the decoder is linear) are clipped to 0.
"""

from __future__ import annotations

import contextlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _contract
import numpy as np

BUDGETS = {
    "quick": dict(max_epochs=60, batch_size=64, early_stopping=False),
    "full": dict(max_epochs=100, batch_size=32, early_stopping=True, early_stopping_patience=25),
}
ARCH = dict(n_hidden=800, n_latent=100, n_layers=2, dropout_rate=0.2)


@contextlib.contextmanager
def seeded_default_rng(seed: int):
    """Make ``np.random.default_rng()`` (no seed) deterministic within the block."""
    original = np.random.default_rng
    parent = np.random.SeedSequence(seed)

    def default_rng(seed=None):
        return original(parent.spawn(1)[0] if seed is None else seed)

    np.random.default_rng = default_rng
    try:
        yield
    finally:
        np.random.default_rng = original


def run(task: _contract.Task) -> _contract.Prediction:
    import logging

    import pertpy
    import scvi

    for name in ("scvi", "lightning", "lightning.pytorch", "pertpy", "jax"):
        logging.getLogger(name).setLevel(logging.ERROR)
    args = task.args
    scvi.settings.seed = args.seed  # torch, numpy, random and the JAX PRNG key
    train_kw = dict(BUDGETS[args.budget])
    if args.max_epochs:
        train_kw["max_epochs"] = args.max_epochs
    train, source = task.train.copy(), task.source.copy()
    train.X = _contract.dense(train.X).astype(np.float32)
    source.X = _contract.dense(source.X).astype(np.float32)
    pertpy.tl.Scgen.setup_anndata(
        train, batch_key=args.perturbation_key, labels_key=task.context_key
    )
    model = pertpy.tl.Scgen(train, **ARCH)
    with _contract.Timer() as t_train:
        model.train(
            accelerator="cpu", enable_progress_bar=False, enable_model_summary=False, **train_kw
        )
    history = model.history.get("elbo_train", model.history.get("train_loss_epoch"))
    epochs = len(history) if history is not None else train_kw["max_epochs"]
    blocks = []
    with _contract.Timer() as t_pred, seeded_default_rng(args.seed):
        for target in task.targets:  # one training, one latent shift per target
            pred, _delta = model.predict(
                ctrl_key=args.control, stim_key=target, adata_to_predict=source
            )
            blocks.append(np.asarray(pred.X, dtype=np.float32))
    X = np.concatenate(blocks, axis=0)
    n_neg = int((X < 0).sum())
    notes = (
        f"pertpy Scgen (JAX); latent shift mean(stim)-mean(ctrl) over all training cells, "
        f"cell types balanced; {epochs} epochs; decoder output clipped at 0 "
        f"({n_neg / X.size:.1%} of values were negative)"
    )
    return _contract.Prediction(
        X=np.clip(X, 0, None),
        version=f"pertpy {pertpy.__version__}",
        train_s=t_train.s,
        predict_s=t_pred.s,
        epochs=epochs,
        notes=notes,
        settings={**ARCH, **train_kw, "train_size": 0.9, "lr": 1e-3},
        history=[float(v) for v in np.asarray(history, dtype=float).ravel()]
        if history is not None
        else [],
        history_unit="epoch (elbo_train)",
    )


if __name__ == "__main__":
    _contract.main("scgen", run)
