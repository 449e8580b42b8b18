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
One training step (batch 128) takes ~0.9 s on one idle core.

- ``quick``: 120 training steps with the learning rate annealed to 0 over them, 50 DDIM
  steps (~2.2 min on the Kang task).
- ``full``: Squidiff's recommended schedule (``train_squidiff.py`` defaults: lr 1e-4 annealed
  linearly over ``lr_anneal_steps`` = 1e5 steps, batch 128), run until 1e5 steps *or* a
  wall-clock cap of 20 minutes of training, whichever comes first (on 2 CPU cores the cap
  comes first: ~1000 steps, 1% of the schedule, so the learning rate stays ~1e-4); DDIM 100
  steps. Whether the loss levelled off is recorded (``uns['peer']['converged']``, last 10% of
  the steps vs the 10% before) with the curve (``uns['peer']['history']``).

Several targets: one training (Squidiff's encoder sees x only, ``class_cond=False``), then per
target its own latent shift and sampling pass. The context (cell type, else batch, else one)
is what the latent shifts are averaged over.

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
    "quick": dict(
        width=2048, num_layers=3, batch_size=128, steps=120, anneal_steps=120, ddim_steps=50
    ),
    "full": dict(
        width=2048,
        num_layers=3,
        batch_size=128,
        steps=100_000,  # Squidiff's lr_anneal_steps default
        anneal_steps=100_000,
        max_train_minutes=20.0,  # the CPU cap; stops well before 1e5 steps
        ddim_steps=100,
    ),
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
        cfg["anneal_steps"] = min(cfg["anneal_steps"], args.max_epochs)
    th.manual_seed(args.seed)
    train = task.train.copy()
    train.X = _contract.dense(train.X).astype(np.float32)
    # unused with class_cond=False, but AnnDataDataset reads it
    train.obs["Group"] = (train.obs[args.perturbation_key] != args.control).astype(np.float32)
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
            lr_anneal_steps=cfg["anneal_steps"],
        )
        with _contract.Timer() as t_train:
            steps = _train(loop, data, cfg["steps"], cfg.get("max_train_minutes"))
        losses = [float(v.detach()) for v in loop.loss_list]
        if dist.is_initialized():
            dist.destroy_process_group()
    if not np.isfinite(losses).all():
        raise RuntimeError("training loss became non-finite")

    model.eval()
    with _contract.Timer() as t_pred, th.no_grad():
        z_train = model.encoder(th.tensor(train.X)).numpy()
        z_src = model.encoder(th.tensor(x_src)).numpy()
        blocks = []
        for target in task.targets:
            deltas = _contract.context_shifts(task, z_train, target)
            z = th.tensor(z_src + np.mean(deltas, axis=0), dtype=th.float32)
            # the same noise for every target: blocks differ only by their latent shift
            noise = th.randn(x_src.shape, generator=th.Generator().manual_seed(args.seed + 1))
            x = sampler_diffusion.ddim_sample_loop(
                model,
                (x_src.shape[0], G),
                noise=noise,
                model_kwargs={"z_mod": z},
                denoised_fn=lambda x0: th.minimum(x0.clamp(min=0), upper),
                eta=0.0,
            )
            blocks.append(x.numpy())
    X = np.clip(np.concatenate(blocks, axis=0), 0, upper.numpy())
    conv = _contract.convergence(losses)
    notes = (
        f"Squidiff diffusion autoencoder, width {W}, {steps} training steps in "
        f"{t_train.s / 60:.1f} min (lr annealed over {cfg['anneal_steps']} steps; upstream "
        f"default 1e5), loss {conv.get('first10_mean', float('nan')):.3f} (first 10%) -> "
        f"{conv.get('last10_mean', float('nan')):.3f} (last 10%), converged: "
        f"{conv['converged']}; latent shift averaged over {len(deltas)} training context(s); "
        f"DDIM {cfg['ddim_steps']} steps, x0 clamped to the training per-gene range"
    )
    version = getattr(Squidiff, "__version__", None) or _dist_version("squidiff")
    return _contract.Prediction(
        X=X,
        version=f"squidiff {version}",
        train_s=t_train.s,
        predict_s=t_pred.s,
        epochs=steps,
        notes=notes,
        settings={**COMMON, **cfg, "steps_run": steps, "unit": "steps"},
        history=losses,
        history_unit="step",
    )


def _train(loop, data, steps: int, max_minutes: float | None) -> int:
    """Squidiff's ``TrainLoop.run_loop`` without its logging and checkpoints (~830 MB per save
    at width 2048), stopping after ``steps`` steps or ``max_minutes`` of wall-clock time."""
    import time

    t0 = time.perf_counter()
    while loop.step < steps:
        if max_minutes is not None and time.perf_counter() - t0 > 60 * max_minutes:
            break
        loop.run_step(next(iter(data)))  # as run_loop: a fresh shuffled batch per step
        loop.step += 1
    return loop.step


def _dist_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":
    _contract.main("squidiff", run)
