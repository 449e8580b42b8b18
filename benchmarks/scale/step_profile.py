"""Where a training step's time goes, by phase, and the step's share of the matmul peak.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale/step_profile.py [--data FILE]
        [--batches 128,256,512,1024] [--steps 60] [--threads 1] [--backed] [--out DIR]

The model is built as ``rnadiff train`` builds it (defaults, the scale benchmark's synthetic
10k file by default, in memory), then the loop of :meth:`rnadiff.training.Trainer.fit` is
replayed step by step with a clock around each phase (the CPU runs synchronously, so the
clock is exact): batch assembly (indices, condition drop, sigma and noise draws, the rows in
model space; ``rows_ms`` is the rows' share of it), forward + backward, gradient clipping,
the optimizer, the EMA, and the loss read back (``.item()``). The first ``--warmup`` steps
are not counted. The overhead the issue targets (< 15% of a step) is optimizer + EMA +
clipping + batch assembly + loss read-back.
The step's share of the peak is 3 x the forward FLOPs of the denoiser's Linear layers over
the step time, against the best fp32 square ``torch.mm`` at the same thread count.
Writes ``step_profile.csv`` and ``step_profile.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import anndata as ad
import pandas as pd
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _matmul import gflops  # noqa: E402
from _rnadiff_run import step_flops  # noqa: E402

PHASES = ("batch", "forward_backward", "clip", "optimizer", "ema", "loss_item")


def build_model(path: Path, n_cells: int | None, backed: bool = False):
    """The model as ``rnadiff train`` builds it; ``backed``: the file read on disk (as
    ``rnadiff train --backed``), its minibatches read a block at a time."""
    from rnadiff import RNADiffusion

    adata = ad.read_h5ad(path, backed="r" if backed else None)
    if n_cells:
        adata = adata[:n_cells].to_memory() if backed else adata[:n_cells].copy()
    RNADiffusion.setup_anndata(
        adata, perturbation_key="perturbation", control="control", cell_type_key="cell_type"
    )
    return RNADiffusion(adata)


def profile(model, batch_size: int, steps: int, warmup: int) -> dict:
    """Seconds per phase per step, replaying ``Trainer.fit``'s step."""
    from rnadiff._config import TrainConfig
    from rnadiff.conditioning import random_drop
    from rnadiff.data._loader import BLOCK, CellMatrix, ConditionTable
    from rnadiff.diffusion import denoising_loss, sample_training_sigmas
    from rnadiff.model._data import source_for
    from rnadiff.training import Trainer, batch_indices, lr_at
    from rnadiff.training._ema import update_ema
    from rnadiff.training._loop import _seeded, clip_gradients

    cfg = TrainConfig(batch_size=batch_size, max_steps=steps + warmup)
    data = CellMatrix.of(model.adata, model.preprocess, source_for(model, model.adata, None))
    conds = ConditionTable(model.registry, model.adata.obs)
    trainer = Trainer(
        model.denoiser,
        config=cfg,
        diffusion=model.config.diffusion,
        p_drop=model.config.p_drop,
        ema=model.ema,
    )
    net, diff = trainer.model, trainer.diffusion
    net.train()
    params = list(net.parameters())
    seconds = dict.fromkeys(PHASES, 0.0)
    rows_s = total = 0.0
    block = BLOCK if getattr(data, "backed", False) else None
    for step in range(steps + warmup):
        clock = {}
        t0 = time.perf_counter()
        idx = batch_indices(step, len(data), batch_size, seed=cfg.seed, block=block)
        gen = _seeded(cfg.seed, 2, step, 0)
        cond = random_drop(conds.rows(idx), trainer.p_drop, generator=gen)
        sigma = sample_training_sigmas(
            len(idx), p_mean=diff.p_mean, p_std=diff.p_std, generator=gen
        )
        r0 = time.perf_counter()
        x0 = data.rows(idx)
        read = time.perf_counter() - r0
        noise = torch.randn(x0.shape, generator=gen)
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        t1 = time.perf_counter()
        clock["batch"] = t1 - t0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=gen)))
            loss = denoising_loss(
                net, x0, sigma, noise, cond=cond, sigma_data=diff.sigma_data
            ).mean()
            trainer.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        t2 = time.perf_counter()
        clock["forward_backward"] = t2 - t1
        clip_gradients(params, cfg.grad_clip, device=torch.device("cpu"))
        t3 = time.perf_counter()
        clock["clip"] = t3 - t2
        trainer.optimizer.step()
        t4 = time.perf_counter()
        clock["optimizer"] = t4 - t3
        update_ema(trainer.ema, net, decay=cfg.ema_decay, step=step)
        t5 = time.perf_counter()
        clock["ema"] = t5 - t4
        loss.detach().item()
        t6 = time.perf_counter()
        clock["loss_item"] = t6 - t5
        if step >= warmup:
            for k, v in clock.items():
                seconds[k] += v
            total += t6 - t0
            rows_s += read
    per_step = {f"{k}_ms": 1000 * v / steps for k, v in seconds.items()}
    per_step["rows_ms"] = 1000 * rows_s / steps
    per_step["step_ms"] = 1000 * total / steps
    overhead = sum(seconds[k] for k in PHASES if k != "forward_backward")
    per_step["overhead_share"] = overhead / total
    per_step["cells_per_s"] = batch_size * steps / total
    return per_step


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data", type=Path, default=HERE.parent / "results/scale/data/synthetic_10k.h5ad"
    )
    p.add_argument("--cells", type=int, default=None, help="the first N cells only")
    p.add_argument("--batches", default="128,256,512,1024")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--backed", action="store_true", help="read the file on disk (backed)")
    p.add_argument("--out", type=Path, default=HERE.parent / "results/scale")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    peak = max(gflops(1024), gflops(2048))
    model = build_model(args.data, args.cells, args.backed)
    rows = []
    for b in (int(s) for s in args.batches.split(",")):
        row = {"threads": args.threads, "batch_size": b} | profile(
            model, b, args.steps, args.warmup
        )
        flops = step_flops(model, b)
        row["step_gflops"] = flops["step_gflop"] / (row["step_ms"] / 1000)
        row["matmul_peak_gflops"] = peak
        row["share_of_peak"] = row["step_gflops"] / peak
        rows.append(row)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
    args.out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    stem = f"step_profile_t{args.threads}"
    df.to_csv(args.out / f"{stem}.csv", index=False)
    note = (
        f"`benchmarks/scale/step_profile.py --threads {args.threads}` on {args.data.name}, "
        f"{args.steps} steps after {args.warmup} of warm-up, measured "
        f"{time.strftime('%Y-%m-%d %H:%M')} (load average {os.getloadavg()[0]:.1f} at the end)."
    )
    (args.out / f"{stem}.md").write_text(markdown(df, note))


def markdown(df: pd.DataFrame, note: str) -> str:
    """The profile as a Markdown table: ms per phase, and shares of the step and the peak."""
    peak = df["matmul_peak_gflops"].iloc[0]
    threads = int(df["threads"].iloc[0])
    lines = [
        f"# Step profile, {threads} thread(s), matmul peak {peak:.1f} GFLOP/s",
        "",
        note + " Overhead: everything but forward + backward (batch assembly, clipping, the "
        "optimizer, the EMA, reading the loss back). % peak: 3 x the forward FLOPs of the "
        "Linear layers over the step's time (forward + backward alone: its ceiling without "
        "overhead).",
        "",
        "| batch | step ms | cells/s | "
        + " | ".join(f"{k.replace('_', ' ')} ms" for k in PHASES)
        + " | overhead | % peak | % peak, forward + backward alone |",
        "|" + "---|" * (len(PHASES) + 6),
    ]
    for _, r in df.iterrows():
        alone = r["step_gflops"] * r["step_ms"] / r["forward_backward_ms"] / peak
        cells = [f"{int(r['batch_size'])}", f"{r['step_ms']:.1f}", f"{r['cells_per_s']:,.0f}"]
        cells += [f"{r[f'{k}_ms']:.2f}" for k in PHASES]
        cells += [f"{r['overhead_share']:.0%}", f"{r['share_of_peak']:.0%}", f"{alone:.0%}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
