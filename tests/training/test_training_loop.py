"""The training loop: learning-rate schedule, minibatches, loss reduction and exact resumption."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rnadiff._config import DiffusionConfig, NetworkConfig, TrainConfig
from rnadiff.diffusion import denoising_loss
from rnadiff.networks import Denoiser
from rnadiff.training import (
    Trainer,
    batch_indices,
    load_checkpoint,
    lr_at,
    make_ema,
    save_checkpoint,
)
from rnadiff.training._loop import clip_gradients

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------- lr schedule


def test_lr_warmup_is_linear_up_to_the_peak():
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, max_steps=100)
    lrs = [lr_at(s, cfg) for s in range(10)]
    assert lrs[0] == pytest.approx(1e-4)
    assert lrs[-1] == pytest.approx(1e-3)
    assert lrs == pytest.approx([1e-4 * (s + 1) for s in range(10)])


@pytest.mark.parametrize("warmup", [0, 10])
@pytest.mark.parametrize("floor", [0.05, 0.0, 1.0])
def test_lr_cosine_endpoints_and_midpoint(warmup, floor):
    cfg = TrainConfig(lr=2e-3, warmup_steps=warmup, max_steps=110, lr_min_ratio=floor)
    assert lr_at(warmup, cfg) == pytest.approx(2e-3)
    assert lr_at(110, cfg) == pytest.approx(2e-3 * floor)
    assert lr_at(10_000, cfg) == pytest.approx(2e-3 * floor), "stays at the floor afterwards"
    mid = warmup + (110 - warmup) / 2
    # cos(pi / 2) = 0: halfway through the decay the lr is halfway between peak and floor.
    assert lr_at(int(mid), cfg) == pytest.approx(2e-3 * (1 + floor) / 2, rel=0.05)
    decay = [lr_at(s, cfg) for s in range(warmup, 111)]
    assert all(a >= b for a, b in itertools.pairwise(decay))


# ----------------------------------------------------------------------------- minibatches


@pytest.mark.parametrize(("n", "batch_size"), [(96, 16), (10, 10), (64, 8)])
def test_batches_cover_every_cell_once_per_epoch(n, batch_size):
    per_epoch = n // batch_size
    for epoch in range(3):
        steps = range(epoch * per_epoch, (epoch + 1) * per_epoch)
        cells = torch.cat([batch_indices(s, n, batch_size, seed=0) for s in steps])
        assert torch.equal(cells.sort().values, torch.arange(n)), f"epoch {epoch}"


def test_batches_without_a_full_last_batch_see_each_cell_at_most_once():
    n, batch_size = 100, 16  # 6 full batches, 4 cells left over per epoch
    cells = torch.cat([batch_indices(s, n, batch_size, seed=0) for s in range(6)])
    assert len(cells) == 96
    assert len(cells.unique()) == 96


def test_batches_reshuffle_between_epochs_and_follow_the_seed():
    n, batch_size = 96, 16
    assert torch.equal(
        batch_indices(3, n, batch_size, seed=1), batch_indices(3, n, batch_size, seed=1)
    )
    assert not torch.equal(
        batch_indices(3, n, batch_size, seed=1), batch_indices(3, n, batch_size, seed=2)
    )
    # Step 0 and step 6 open consecutive epochs: different permutations.
    assert not torch.equal(
        batch_indices(0, n, batch_size, seed=1), batch_indices(6, n, batch_size, seed=1)
    )


def test_batch_larger_than_the_data_is_the_whole_data():
    batch = batch_indices(0, 20, 256, seed=0)
    assert torch.equal(batch.sort().values, torch.arange(20))


@pytest.mark.parametrize("world_size", [2, 3, 4])
@pytest.mark.parametrize("step", [0, 5, 13])
def test_rank_shards_partition_the_global_batch(world_size, step):
    n, batch_size = 96, 16
    whole = batch_indices(step, n, batch_size, seed=4)
    shards = [
        batch_indices(step, n, batch_size, seed=4, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    assert torch.equal(torch.cat(shards), whole)
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


# ------------------------------------------------------------------------------- the loop

N_CELLS, GENES = 96, 6


def _problem(seed=0):
    """Two cell types with different mean profiles, plus a dose that shifts one gene."""
    gen = torch.Generator().manual_seed(seed)
    cell_type = torch.zeros(N_CELLS, 2)
    label = torch.arange(N_CELLS) % 2
    cell_type[torch.arange(N_CELLS), label] = 1.0
    dose = torch.randn(N_CELLS, generator=gen)
    means = torch.randn(2, GENES, generator=gen)
    x = means[label] + 0.3 * torch.randn(N_CELLS, GENES, generator=gen)
    x[:, 0] += 0.5 * dose
    return x, {"cell_type": cell_type, "dose": dose}


def _model(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    return Denoiser(
        GENES,
        categorical={"cell_type": 2},
        continuous=["dose"],
        config=NetworkConfig(width=32, depth=1, emb_dim=16, dropout=dropout),
        sigma_data=1.0,
    )


@torch.no_grad()
def _eval_loss(model, x, cond):
    """Denoising loss on fixed noise levels and noise, so that it is comparable across models."""
    gen = torch.Generator().manual_seed(123)
    reps = 20
    x0 = x.repeat(reps, 1)
    c = {k: v.repeat(reps, *([1] * (v.ndim - 1))) for k, v in cond.items()}
    sigma = (torch.randn(len(x0), generator=gen) * 1.2 - 1.2).exp()
    noise = torch.randn(x0.shape, generator=gen)
    model.eval()
    return denoising_loss(model, x0, sigma, noise, cond=c).mean().item()


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3, float("nan")])
def test_clipping_gives_the_gradients_of_clip_grad_norm(scale):
    # a norm below the threshold (left as it is), above it, far above it, not finite
    def grads():
        model = _model()
        for i, p in enumerate(model.parameters()):
            p.grad = scale * torch.randn(p.shape, generator=torch.Generator().manual_seed(i))
        return list(model.parameters())

    ours, reference = grads(), grads()
    clip_gradients(ours, 1.0, device=torch.device("cpu"))
    torch.nn.utils.clip_grad_norm_(reference, 1.0, foreach=True)
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0, equal_nan=True)
    norm = torch.linalg.vector_norm(torch.cat([p.grad.ravel() for p in ours]))
    if scale == 1e-3:  # untouched
        assert all(torch.equal(a.grad, b.grad) for a, b in zip(ours, grads(), strict=True))
    elif scale > 1e-3:
        assert norm < 1.0 + 1e-4


def test_fit_reduces_the_loss():
    x, cond = _problem()
    model = _model()
    cfg = TrainConfig(max_steps=60, batch_size=32, lr=5e-3, warmup_steps=5, seed=0)
    trainer = Trainer(model, config=cfg, diffusion=DiffusionConfig(), p_drop=0.1)
    before = _eval_loss(model, x, cond)

    history = trainer.fit(x, cond, progress=False, log_every=20)

    assert trainer.step == 60
    assert [h["step"] for h in history] == [20, 40, 60]
    assert all(math.isfinite(h["loss"]) for h in history)
    assert history[-1]["loss"] < history[0]["loss"]
    # The untrained denoiser (c_skip * x) is already optimal for N(0, 1) data; the structure
    # (cell-type means, dose effect) is what it learns here. Observed ratio ~0.64.
    assert _eval_loss(model, x, cond) < 0.8 * before
    assert _eval_loss(trainer.ema, x, cond) < before


def test_fit_does_not_modify_the_data():
    x, cond = _problem()
    x_before, cond_before = x.clone(), {k: v.clone() for k, v in cond.items()}
    cfg = TrainConfig(max_steps=3, batch_size=32)
    Trainer(_model(), config=cfg, diffusion=DiffusionConfig(), p_drop=0.5).fit(
        x, cond, progress=False
    )
    assert torch.equal(x, x_before)
    assert all(torch.equal(cond[k], cond_before[k]) for k in cond)


def test_fit_is_reproducible():
    x, cond = _problem()
    cfg = TrainConfig(max_steps=6, batch_size=16, seed=3)

    def run():
        model = _model(dropout=0.1)
        Trainer(model, config=cfg, diffusion=DiffusionConfig(), p_drop=0.2).fit(
            x, cond, progress=False
        )
        return model.state_dict()

    a, b = run(), run()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _run(x, cond, *, log_every=1, **trainer_options):
    cfg = TrainConfig(max_steps=17, batch_size=16, lr=3e-3, warmup_steps=3, seed=5)
    trainer = Trainer(
        _model(dropout=0.1), config=cfg, diffusion=DiffusionConfig(), p_drop=0.3, **trainer_options
    )
    return trainer, trainer.fit(x, cond, progress=False, log_every=log_every)


def test_prefetched_batches_give_the_same_run():
    """A step's draws depend on the step alone, so assembling the next batch in a background
    thread while a step computes changes nothing: same losses, same weights, same EMA."""
    x, cond = _problem()
    plain, plain_history = _run(x, cond, prefetch=False)
    ahead, ahead_history = _run(x, cond, prefetch=True)
    assert ahead_history == plain_history
    _assert_same_weights(ahead.model, plain.model)
    _assert_same_weights(ahead.ema, plain.ema)


def test_logged_loss_is_the_mean_of_the_steps_since_the_last_log():
    """Losses are summed on the device (float64) and read back only when logged; each logged
    value is the mean of the per-step losses since the previous one, the last one included
    (17 steps, logged every 5: steps 1-5, 6-10, 11-15, 16-17)."""
    x, cond = _problem()
    _, per_step = _run(x, cond, log_every=1)
    _, every_5 = _run(x, cond, log_every=5)
    losses = [h["loss"] for h in per_step]
    assert [h["step"] for h in every_5] == [5, 10, 15, 17]
    expected = [sum(losses[a:b]) / (b - a) for a, b in [(0, 5), (5, 10), (10, 15), (15, 17)]]
    assert [h["loss"] for h in every_5] == pytest.approx(expected, rel=1e-12, abs=0)


class _Interrupted(Exception):
    pass


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_resume_from_saved_state_equals_the_uninterrupted_run(tmp_path):
    x, cond = _problem()
    total = 12
    cfg = TrainConfig(
        max_steps=total, batch_size=16, lr=3e-3, warmup_steps=3, seed=5, checkpoint_every=total // 2
    )
    diffusion = DiffusionConfig()

    straight = Trainer(_model(dropout=0.1), config=cfg, diffusion=diffusion, p_drop=0.3)
    straight.fit(x, cond, progress=False, log_every=3)

    # Same run, interrupted right after the checkpoint of step total / 2.
    def checkpoint_then_crash(trainer):
        meta, tensors = trainer.state_tensors()
        weights = {f"model.{k}": v for k, v in trainer.model.state_dict().items()}
        weights |= {f"ema.{k}": v for k, v in trainer.ema.state_dict().items()}
        save_checkpoint(tmp_path / "ckpt", {"trainer": meta}, {"weights": weights, "opt": tensors})
        raise _Interrupted

    first = Trainer(_model(dropout=0.1), config=cfg, diffusion=diffusion, p_drop=0.3)
    with pytest.raises(_Interrupted):
        first.fit(x, cond, on_checkpoint=checkpoint_then_crash, progress=False, log_every=3)
    assert first.step == total // 2

    # A new process: fresh (differently initialized) model and EMA, loaded from disk.
    meta, tensors = load_checkpoint(tmp_path / "ckpt")
    weights = tensors["weights"]
    model = _model(seed=99, dropout=0.1)
    model.load_state_dict({k[6:]: v for k, v in weights.items() if k.startswith("model.")})
    ema = make_ema(model)
    ema.load_state_dict({k[4:]: v for k, v in weights.items() if k.startswith("ema.")})
    resumed = Trainer(model, config=cfg, diffusion=diffusion, p_drop=0.3, ema=ema)
    resumed.load_state(meta["trainer"], tensors["opt"])
    assert resumed.step == total // 2
    resumed.fit(x, cond, progress=False, log_every=3)

    assert resumed.step == total
    _assert_same_weights(resumed.model, straight.model)
    _assert_same_weights(resumed.ema, straight.ema)
    assert resumed.history == straight.history


def test_resume_without_the_optimizer_state_diverges(tmp_path):
    # Guard for the test above: skipping load_state (Adam moments, step) changes the result.
    x, cond = _problem()
    cfg = TrainConfig(max_steps=8, batch_size=16, seed=5, checkpoint_every=4)
    diffusion = DiffusionConfig()
    straight = Trainer(_model(), config=cfg, diffusion=diffusion, p_drop=0.3)
    straight.fit(x, cond, progress=False)

    saved = {}

    def crash(trainer):
        saved["model"] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        saved["ema"] = {k: v.clone() for k, v in trainer.ema.state_dict().items()}
        raise _Interrupted

    with pytest.raises(_Interrupted):
        Trainer(_model(), config=cfg, diffusion=diffusion, p_drop=0.3).fit(
            x, cond, on_checkpoint=crash, progress=False
        )
    model = _model()
    model.load_state_dict(saved["model"])
    ema = make_ema(model)
    ema.load_state_dict(saved["ema"])
    naive = Trainer(model, config=cfg, diffusion=diffusion, p_drop=0.3, ema=ema)
    naive.step = 4  # resume the step counter but not the optimizer
    naive.fit(x, cond, progress=False)
    assert not torch.equal(naive.model.net.proj_out.weight, straight.model.net.proj_out.weight)


def test_resumed_history_is_logged_at_the_same_steps(tmp_path):
    x, cond = _problem()
    cfg = TrainConfig(max_steps=12, batch_size=16, seed=5, checkpoint_every=6)
    diffusion = DiffusionConfig()
    straight = Trainer(_model(), config=cfg, diffusion=diffusion, p_drop=0.3)
    straight.fit(x, cond, progress=False, log_every=4)
    assert [h["step"] for h in straight.history] == [4, 8, 12]

    saved = {}

    def crash(trainer):
        saved["state"] = trainer.state_tensors()
        saved["model"] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        saved["ema"] = {k: v.clone() for k, v in trainer.ema.state_dict().items()}
        raise _Interrupted

    with pytest.raises(_Interrupted):
        Trainer(_model(), config=cfg, diffusion=diffusion, p_drop=0.3).fit(
            x, cond, on_checkpoint=crash, progress=False, log_every=4
        )
    model = _model()
    model.load_state_dict(saved["model"])
    ema = make_ema(model)
    ema.load_state_dict(saved["ema"])
    resumed = Trainer(model, config=cfg, diffusion=diffusion, p_drop=0.3, ema=ema)
    resumed.load_state(*saved["state"])
    resumed.fit(x, cond, progress=False, log_every=4)

    assert [h["step"] for h in resumed.history] == [4, 8, 12]
    # the checkpoint (step 6) fell inside the window of steps 5-8: its mean is still over all 4
    assert resumed.history == straight.history


def test_a_checkpoint_of_the_unfused_optimizer_resumes_fused(tmp_path):
    # Checkpoints written before 2026-11 hold a plain (unfused) AdamW state; a resumed run
    # continues with the fused one and follows the plain optimizer's path (same maths).
    x, cond = _problem()
    cfg = TrainConfig(max_steps=10, batch_size=16, lr=3e-3, warmup_steps=2, seed=5)
    diffusion = DiffusionConfig()
    old = Trainer(_model(), config=cfg, diffusion=diffusion, p_drop=0.3)
    old.optimizer = torch.optim.AdamW(
        old.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=False
    )
    old.config = TrainConfig(**{**cfg.to_dict(), "max_steps": 5})
    old.fit(x, cond, progress=False)
    meta, tensors = old.state_tensors()
    assert meta["optimizer"]["param_groups"][0]["fused"] is False
    save_checkpoint(tmp_path / "ckpt", {"trainer": meta}, {"opt": tensors})
    meta, tensors = load_checkpoint(tmp_path / "ckpt")
    meta, tensors = meta["trainer"], tensors["opt"]

    resumed_model = _model()
    resumed_model.load_state_dict(old.model.state_dict())
    ema = make_ema(resumed_model)
    ema.load_state_dict(old.ema.state_dict())
    resumed = Trainer(resumed_model, config=cfg, diffusion=diffusion, p_drop=0.3, ema=ema)
    resumed.load_state(meta, tensors)
    assert resumed.optimizer.param_groups[0]["fused"] is True
    resumed.fit(x, cond, progress=False)

    old.config = cfg  # the old optimizer goes on to the end
    old.fit(x, cond, progress=False)
    assert resumed.step == old.step == 10
    moved = False
    for a, b, start in zip(
        resumed.model.parameters(), old.model.parameters(), _model().parameters(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        moved |= not torch.equal(a, start)
    assert moved
