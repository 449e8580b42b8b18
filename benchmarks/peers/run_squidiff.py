"""Squidiff peer runner (``squidiff`` 1.0.8 from PyPI; run with ``.peers/squidiff/bin/python``).

Squidiff (He et al. 2024): a diffusion autoencoder on log-normalized expression. An MLP encoder
maps each cell to a 60-d semantic latent ``z``; an MLP denoiser (epsilon prediction, 1000-step
linear schedule) conditioned on ``z`` reconstructs the cell. Training uses Squidiff's own
``TrainLoop`` (AdamW lr 1e-4, no weight decay, uniform timestep sampler, MSE on epsilon, the
learning rate annealed linearly to 0 over the run's steps; ``lr_anneal_steps`` = steps) in a
single-process gloo group on CPU; its checkpoint writing (~830 MB per save at width 2048) is
switched off.

Prediction (the recipe of the package README, whose sampler is not in the wheel and hard-codes
CUDA): encode the source cells, shift their latents by the mean over training cell types of
mean(z | target) - mean(z | control), then run Squidiff's ``ddim_sample_loop`` (eta 0) with
``model_kwargs={'z_mod': z}`` from seeded noise; each x0 prediction is clamped to the training
data's per-gene range [0, max]. The wheel's sampler runs DDIM over all 1000 steps; here the
schedule is respaced (``timestep_respacing='ddimK'``) to fit a CPU budget.

Both budgets keep the package's default denoiser (width 2048, 3 blocks; ~59 M parameters):
a narrower one cannot pass 1267 genes through and its loss stalls near 1 (tried: width 512).
One training step (batch 128) takes ~0.9 s on one core.

- ``quick``: 120 training steps, 50 DDIM steps (~2.2 min on the Kang task).
- ``full``: 500 training steps, 100 DDIM steps (~8.6 min). Upstream trains for
  ``lr_anneal_steps`` = 1e5 steps on a GPU: at these CPU budgets the model is far from
  converged (training loss still near 1), and the numbers should be read as "Squidiff at this
  budget", not as Squidiff's best.

``--max-epochs N`` sets the number of training steps (one batch per step).
"""

from __future__ import annotations

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _contract
import numpy as np

BUDGETS = {
    "quick": dict(width=2048, num_layers=3, batch_size=128, steps=120, ddim_steps=50),
    "full": dict(width=2048, num_layers=3, batch_size=128, steps=500, ddim_steps=100),
}
COMMON = dict(
    lr=1e-4,
    weight_decay=0.0,
    diffusion_steps=1000,
    noise_schedule="linear",
    latent_dim=60,
    ema_rate="0.9999",
    encoder_input="x_start only (class_cond=False)",
)


def run(task: _contract.Task) -> _contract.Prediction:
    import logging

    import Squidiff
    import torch as th
    import torch.distributed as dist
    from Squidiff import logger as sq_logger
    from Squidiff.MLPModel import MLPModel
    from Squidiff.script_util import create_gaussian_diffusion
    from Squidiff.scrna_datasets import AnnDataDataset
    from Squidiff.train_util import TrainLoop
    from torch.utils.data import DataLoader

    logging.getLogger("torch").setLevel(logging.ERROR)
    args = task.args
    cfg = dict(BUDGETS[args.budget])
    if args.max_epochs:
        cfg["steps"] = args.max_epochs
    th.manual_seed(args.seed)
    pk, ck = args.perturbation_key, args.cell_type_key
    train = task.train.copy()
    train.X = _contract.dense(train.X).astype(np.float32)
    train.obs["Group"] = (train.obs[pk] == args.target).astype(np.float32).to_numpy()
    x_src = _contract.dense(task.source.X).astype(np.float32)
    G = train.n_vars
    upper = th.tensor(train.X.max(axis=0), dtype=th.float32)

    W = cfg["width"]
    model = MLPModel(
        G,
        G,
        cfg["num_layers"],
        hidden_sizes=W,
        time_pos_dim=W,
        time_embed_dim=W,
        latent_dim=COMMON["latent_dim"],
        use_encoder=True,
    )
    diffusion = create_gaussian_diffusion(steps=COMMON["diffusion_steps"], use_encoder=True)
    sampler_diffusion = create_gaussian_diffusion(
        steps=COMMON["diffusion_steps"],
        use_encoder=True,
        timestep_respacing=f"ddim{cfg['ddim_steps']}",
    )
    g = th.Generator().manual_seed(args.seed)
    data = DataLoader(
        AnnDataDataset(train, False, 1), batch_size=cfg["batch_size"], shuffle=True, generator=g
    )

    with tempfile.TemporaryDirectory() as tmp:
        if not dist.is_initialized():  # TrainLoop asks for the world size on CPU
            dist.init_process_group("gloo", init_method=f"file://{tmp}/pg", rank=0, world_size=1)
        sq_logger.configure(dir=os.path.join(tmp, "log"), format_strs=[])
        loop = TrainLoop(
            model=model,
            diffusion=diffusion,
            data=data,
            batch_size=cfg["batch_size"],
            microbatch=-1,
            lr=COMMON["lr"],
            ema_rate=COMMON["ema_rate"],
            log_interval=10**9,
            save_interval=10**9,
            resume_checkpoint="",
            weight_decay=COMMON["weight_decay"],
            lr_anneal_steps=cfg["steps"],
        )
        loop.save = lambda: None  # no 100 MB-830 MB checkpoints
        with _contract.Timer() as t_train:
            loop.run_loop()
        losses = [float(v.detach()) for v in loop.loss_list]
        if dist.is_initialized():
            dist.destroy_process_group()
    if not np.isfinite(losses).all():
        raise RuntimeError("training loss became non-finite")

    model.eval()
    with _contract.Timer() as t_pred, th.no_grad():
        z_train = model.encoder(th.tensor(train.X)).numpy()
        obs = train.obs
        deltas = []
        for ct in sorted(set(obs[ck])):
            is_ct = (obs[ck] == ct).to_numpy()
            ctrl = is_ct & (obs[pk] == args.control).to_numpy()
            stim = is_ct & (obs[pk] == args.target).to_numpy()
            if ctrl.any() and stim.any():
                deltas.append(z_train[stim].mean(0) - z_train[ctrl].mean(0))
        if not deltas:
            raise ValueError("no training cell type has both control and target cells")
        delta = np.mean(deltas, axis=0)
        z_src = model.encoder(th.tensor(x_src)).numpy()
        z = th.tensor(z_src + delta, dtype=th.float32)
        noise = th.randn(x_src.shape, generator=th.Generator().manual_seed(args.seed + 1))
        x = sampler_diffusion.ddim_sample_loop(
            model,
            (x_src.shape[0], G),
            noise=noise,
            model_kwargs={"z_mod": z},
            denoised_fn=lambda x0: th.minimum(x0.clamp(min=0), upper),
            eta=0.0,
        )
    X = np.clip(x.numpy(), 0, upper.numpy())
    tail = float(np.mean(losses[-50:]))
    notes = (
        f"Squidiff diffusion autoencoder, width {W}, {cfg['steps']} training steps (upstream "
        f"default 1e5), final loss {tail:.3f} (start {np.mean(losses[:10]):.3f}); latent shift "
        f"averaged over {len(deltas)} training cell types; DDIM {cfg['ddim_steps']} steps, x0 "
        f"clamped to the training per-gene range; far from converged at this CPU budget"
    )
    version = getattr(Squidiff, "__version__", None) or _dist_version("squidiff")
    return _contract.Prediction(
        X=X,
        version=f"squidiff {version}",
        train_s=t_train.s,
        predict_s=t_pred.s,
        epochs=cfg["steps"],
        notes=notes,
        settings={**COMMON, **cfg, "unit": "steps"},
    )


def _dist_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":
    _contract.main("squidiff", run)
