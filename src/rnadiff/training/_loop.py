"""The training loop: the only place that owns an optimizer.

Every random draw of step ``s`` comes from generators seeded by ``(seed, s)``, so a run resumed
from a checkpoint continues exactly as the uninterrupted run would have. Under ``torchrun`` with an
initialized process group, the model is wrapped in DistributedDataParallel and each rank trains on
its own slice of every global minibatch.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from rnadiff._config import DiffusionConfig, TrainConfig
from rnadiff.conditioning import random_drop
from rnadiff.data._loader import BLOCK
from rnadiff.diffusion import denoising_loss, sample_training_sigmas
from rnadiff.training._checkpoint import optimizer_from_tensors, optimizer_to_tensors
from rnadiff.training._ema import make_ema, update_ema


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``lr_min_ratio * lr`` at ``max_steps``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(config.max_steps - config.warmup_steps, 1)
    progress = min((step - config.warmup_steps) / span, 1.0)
    floor = config.lr_min_ratio
    return config.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def _seeded(seed: int, *salt: int) -> torch.Generator:
    value = seed
    for s in salt:
        value = (value * 1_000_003 + s) % (2**63 - 1)
    return torch.Generator().manual_seed(value)


def clip_gradients(params: list[nn.Parameter], max_norm: float, *, device: torch.device) -> None:
    """Scale the gradients so that their global norm is at most ``max_norm``.

    The same gradients as ``nn.utils.clip_grad_norm_``, which multiplies every gradient by
    ``min(1, max_norm / (norm + 1e-6))`` even when that is 1 (the usual case: the gradients
    are rarely clipped). On the CPU the norm is read first and the multiplication skipped when
    it would be by 1; on a GPU reading it would wait for the device, so the multiplication
    runs unconditionally there.
    """
    if device.type != "cpu":
        nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
        return
    norm = nn.utils.get_total_norm([p.grad for p in params if p.grad is not None], foreach=True)
    if not max_norm / (norm + 1e-6) >= 1:  # NaN included, as clip_grad_norm_ would
        nn.utils.clip_grads_with_norm_(params, max_norm, norm, foreach=True)


POOL = 32  # blocks shuffled together when cells are read from disk a block at a time


@functools.lru_cache(maxsize=4)
def epoch_order(n: int, seed: int, epoch: int, block: int | None = None) -> torch.Tensor:
    """The order in which epoch ``epoch`` visits the ``n`` cells (computed once per epoch).

    ``block=None``: a random permutation. ``block=b`` (cells read from disk a block of ``b``
    neighbouring cells at a time): block shuffling, as out-of-core loaders do: the blocks are
    permuted, taken :data:`POOL` at a time, and the cells of each pool shuffled among
    themselves, so that consecutive minibatches read few blocks.
    """
    gen = _seeded(seed, 1, epoch)
    if block is None:
        return torch.randperm(n, generator=gen)
    n_blocks = -(-n // block)
    blocks = torch.randperm(n_blocks, generator=gen).tolist()
    parts = []
    for j, start in enumerate(range(0, n_blocks, POOL)):
        cells = torch.cat(
            [torch.arange(b * block, min((b + 1) * block, n)) for b in blocks[start : start + POOL]]
        )
        parts.append(cells[torch.randperm(len(cells), generator=_seeded(seed, 3, epoch, j))])
    return torch.cat(parts)


def batch_indices(
    step: int,
    n: int,
    batch_size: int,
    *,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    block: int | None = None,
) -> torch.Tensor:
    """Indices of this rank's share of the global minibatch of ``step``.

    An epoch is :func:`epoch_order` cut into ``n // batch_size`` full batches; the ``n %
    batch_size`` cells left over are dropped for that epoch only, so every cell is seen at most
    once per epoch. The order is computed once per epoch (a permutation per step costs O(n)).
    """
    batch_size = min(batch_size, n)
    per_epoch = n // batch_size
    epoch, offset = divmod(step, per_epoch)
    order = epoch_order(n, seed, epoch, block)
    batch = order[offset * batch_size : (offset + 1) * batch_size]
    return batch.tensor_split(world_size)[rank]


class _TensorRows:
    """Rows of an in-memory tensor (model-space cells) or of a dict of condition tensors."""

    def __init__(self, data):
        self.data = data

    def __len__(self) -> int:
        first = self.data if torch.is_tensor(self.data) else next(iter(self.data.values()))
        return first.shape[0]

    def rows(self, idx):
        if torch.is_tensor(self.data):
            return self.data[idx]
        return {k: v[idx] for k, v in self.data.items()}


class _Batch(NamedTuple):
    x0: torch.Tensor
    sigma: torch.Tensor
    noise: torch.Tensor
    cond: dict[str, torch.Tensor]
    dropout_seed: int


class _Batches:
    """The minibatches of steps ``first .. last - 1``, in order. ``prefetch``: the next
    step's batch is assembled in a background thread while the current step computes (on a
    GPU the CPU is otherwise idle meanwhile); the batches are the same either way."""

    def __init__(self, assemble: Callable[[int], _Batch], first: int, last: int, *, prefetch):
        self.assemble, self.last = assemble, last
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="rnadiff-batch") if prefetch else None
        self.pending: tuple[int, Future] | None = None
        if self.pool is not None and first < last:
            self.pending = (first, self.pool.submit(assemble, first))

    def get(self, step: int) -> _Batch:
        if self.pool is None:
            return self.assemble(step)
        ahead, future = self.pending if self.pending else (None, None)
        batch = future.result() if ahead == step else self.assemble(step)
        nxt = step + 1
        self.pending = (nxt, self.pool.submit(self.assemble, nxt)) if nxt < self.last else None
        return batch

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        from rnadiff._errors import InputError

        raise InputError("device='cuda' but no CUDA GPU is available; use device='cpu'")
    return device


class Trainer:
    """Trains a denoiser with AdamW, EMA, warm-up + cosine LR and gradient clipping.

    Parameters
    ----------
    denoiser
        ``denoiser(x, sigma, cond) -> x0_hat``, an ``nn.Module``.
    config
        Optimization settings.
    diffusion
        Noise-level distribution and ``sigma_data``.
    p_drop
        Probability of nulling each covariate of each cell (classifier-free guidance).
    ema
        The EMA copy to keep updated (default: a fresh copy of ``denoiser``).
    device
        Where the weights and the steps live (``"auto"``: CUDA when available).
    compile
        ``torch.compile`` the forward and backward (worth it on a GPU).
    prefetch
        Assemble the next minibatch in a background thread while a step computes. ``None``:
        on a GPU only (on the CPU the thread would take a core from the step's own threads).
        The run is the same either way: a step's draws depend on the step alone.
    """

    def __init__(
        self,
        denoiser: nn.Module,
        *,
        config: TrainConfig,
        diffusion: DiffusionConfig,
        p_drop: float,
        ema: nn.Module | None = None,
        device: str | torch.device = "cpu",
        compile: bool = False,
        prefetch: bool | None = None,
    ):
        self.compile = compile
        # assemble the next minibatch in a background thread (None: on a GPU only)
        self.prefetch = prefetch
        self.device = resolve_device(device)
        self.model = denoiser.to(self.device)
        self.config, self.diffusion, self.p_drop = config, diffusion, p_drop
        self.ema = (ema if ema is not None else make_ema(denoiser)).to(self.device)
        # fused: one pass over each parameter instead of a dozen (3x faster steps on CPU)
        self.optimizer = torch.optim.AdamW(
            denoiser.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True
        )
        self.step = 0
        self.history: list[dict] = []
        # losses since the last logged step (sum, count): saved, so a resumed run logs the
        # same means as an uninterrupted one when a checkpoint falls between two log steps
        self.loss_window = (0.0, 0)

    def _batch(self, data, conds, step: int, *, rank: int, world: int, corrupt) -> _Batch:
        """Everything step ``step`` draws and reads, on the CPU: this rank's share of the
        global minibatch (cells, conditions with covariates dropped, noise levels, noise) and
        the seed of its dropout draws. A function of ``step`` alone, so it can be made ahead
        of time (:class:`_Batches`) without changing the run."""
        cfg = self.config
        block = BLOCK if getattr(data, "backed", False) else None
        idx_all = batch_indices(step, len(data), cfg.batch_size, seed=cfg.seed, block=block)
        share = torch.arange(len(idx_all)).tensor_split(world)[rank]
        idx = idx_all[share]
        # draws for the whole global batch, the same on every rank; each takes its share
        gen = _seeded(cfg.seed, 2, step, 0)
        batch_cond = random_drop(conds.rows(idx_all), self.p_drop, generator=gen)
        batch_cond = {k: v[share] for k, v in batch_cond.items()}
        sigma = sample_training_sigmas(
            len(idx_all), p_mean=self.diffusion.p_mean, p_std=self.diffusion.p_std, generator=gen
        )[share]
        x0 = data.rows(idx)
        noise = torch.randn((len(idx_all), x0.shape[1]), generator=gen)[share]
        if corrupt is not None:
            sigma, noise = corrupt(idx, x0, sigma, noise, gen)
        dropout_seed = int(torch.randint(2**62, (1,), generator=gen))
        if self.device.type == "cuda":  # page-locked: the copies overlap with compute
            x0, sigma, noise = (t.pin_memory() for t in (x0, sigma, noise))
        return _Batch(x0, sigma, noise, batch_cond, dropout_seed)

    def state_tensors(self) -> tuple[dict, dict[str, torch.Tensor]]:
        meta, tensors = optimizer_to_tensors(self.optimizer)
        state = {"optimizer": meta, "step": self.step, "history": self.history}
        return state | {"loss_window": list(self.loss_window)}, tensors

    def load_state(self, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.optimizer.load_state_dict(optimizer_from_tensors(meta["optimizer"], tensors))
        for group in self.optimizer.param_groups:  # checkpoints before 2026-11: not fused
            group["fused"], group["foreach"] = True, None
        self.step, self.history = meta["step"], list(meta["history"])
        running, count = meta.get("loss_window", (0.0, 0))  # absent before 2026-11
        self.loss_window = (float(running), int(count))

    def fit(
        self,
        x,
        cond,
        *,
        on_checkpoint: Callable[[Trainer], None] | None = None,
        progress: bool = True,
        log_every: int = 50,
        corrupt: Callable | None = None,
    ) -> list[dict]:
        """Train from ``self.step`` up to ``config.max_steps`` on cells ``x`` with ``cond``.

        ``x``: a tensor of model-space cells, or an object whose ``rows(idx)`` gives them (a
        :class:`rnadiff.data.CellMatrix`: minibatches densified one at a time, with block
        shuffling when it reads from disk); ``cond``: a dict of condition tensors, or an
        object whose ``rows(idx)`` gives them. Every random draw of a step is made for the
        whole global minibatch and each rank takes its share, so a run on several processes
        (``torchrun``) gives the single-process result up to the order of float sums.
        ``corrupt(idx, x0, sigma, noise, generator) -> (sigma, noise)`` may replace the
        Gaussian corruption of some cells of each batch (the loss sees ``x0 + sigma * noise``),
        e.g. :class:`rnadiff.training._thinning.CountThinning`."""
        cfg = self.config
        data = x if hasattr(x, "rows") else _TensorRows(x)
        conds = cond if hasattr(cond, "rows") else _TensorRows(cond)
        distributed = dist.is_available() and dist.is_initialized()
        rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
        device = self.device
        net = nn.parallel.DistributedDataParallel(self.model) if distributed else self.model
        if self.compile:  # the forward and backward as one graph (worth it on a GPU)
            net = torch.compile(net)
        # an ensemble's members are trained each on its own loss (rnadiff.networks.Denoiser)
        each = functools.partial(net, each=True) if getattr(self.model, "n_models", 1) > 1 else net
        bf16 = cfg.precision_for(cfg.batch_size, device) == "bf16"
        assemble = functools.partial(
            self._batch, data, conds, rank=rank, world=world, corrupt=corrupt
        )
        prefetch = device.type == "cuda" if self.prefetch is None else self.prefetch
        batches = _Batches(assemble, self.step, cfg.max_steps, prefetch=prefetch)
        self.model.train()
        params = list(self.model.parameters())
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.step,
            disable=not progress or rank != 0,
            desc="training",
            unit="step",
        )
        # the losses since the last log step, summed on the device: read back (a host sync)
        # only when logged or saved. float64, so the sum is the one Python floats would give
        running = torch.tensor(self.loss_window[0], dtype=torch.float64, device=device)
        count = self.loss_window[1]
        every, last_save = cfg.checkpoint_interval(cfg.max_steps), time.monotonic()
        try:
            while self.step < cfg.max_steps:
                batch = batches.get(self.step)
                x0, sigma, noise = (
                    t.to(device, non_blocking=True) for t in (batch.x0, batch.sigma, batch.noise)
                )
                batch_cond = {k: v.to(device, non_blocking=True) for k, v in batch.cond.items()}
                for group in self.optimizer.param_groups:
                    group["lr"] = lr_at(self.step, cfg)
                with torch.random.fork_rng(devices=[]):  # dropout draws, seeded per step
                    torch.manual_seed(batch.dropout_seed)
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                        loss = denoising_loss(
                            each,
                            x0,
                            sigma,
                            noise,
                            cond=batch_cond,
                            sigma_data=self.diffusion.sigma_data,
                        ).mean()
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                clip_gradients(params, cfg.grad_clip, device=device)
                self.optimizer.step()
                update_ema(self.ema, self.model, decay=cfg.ema_decay, step=self.step)
                self.step += 1
                value = loss.detach()
                if distributed:  # the global batch's loss, as a single process would log it
                    dist.all_reduce(value)
                    value = value / world
                running, count = running + value.double(), count + 1
                if self.step % log_every == 0 or self.step == cfg.max_steps:
                    mean = running.item() / count
                    self.history.append({"step": self.step, "loss": mean})
                    bar.set_postfix(loss=f"{mean:.4f}")
                    running, count = torch.zeros_like(running), 0
                bar.update(1)
                due = self.step % every == 0 or self.step == cfg.max_steps
                due = due or time.monotonic() - last_save >= 60 * cfg.checkpoint_minutes
                if on_checkpoint is not None and rank == 0 and due:
                    self.loss_window = (running.item(), count)
                    on_checkpoint(self)
                    last_save = time.monotonic()
        finally:  # an error mid-run ends the bar's line before it is reported
            self.loss_window = (running.item(), count)
            batches.close()
            bar.close()
        self.model.eval()
        return self.history
