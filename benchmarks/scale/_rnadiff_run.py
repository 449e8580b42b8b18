"""One rnadiff measurement, run by ``measure.py`` in a fresh process (its peak RSS is its own).

    .venv/bin/python benchmarks/scale/_rnadiff_run.py --data FILE --out DIR --steps N
        --threads T --result result.json [--backed] [--sample-cells 20000]

It runs ``rnadiff train --data FILE --out DIR --perturbation-key perturbation --control control
--cell-type-key cell_type --max-steps N --threads T --quiet [--backed]`` in this process (the
command line's own code path, through its typer app) with timers around the phases: reading the
file, building the model (preprocessing), the training loop (``Trainer.fit``, checkpoints taken
out), calibration and saving. Then it records the peak RSS of training (VmHWM), counts the
FLOPs of one training step (forward hooks on every ``nn.Linear`` of the denoiser; a step is
taken as 3 forward passes), and times ``generate`` of ``--sample-cells`` cells. Whatever
fails is written to the result with the phases reached; a wrapper that no longer finds its
function (the code moved) leaves its field empty instead of failing the run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

SETUP = ["--perturbation-key", "perturbation", "--control", "control"]
SETUP += ["--cell-type-key", "cell_type"]


def vm_hwm_mib() -> float | None:
    """Peak resident memory of this process so far (Linux VmHWM), MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class Timers:
    """Wraps functions by dotted location; each call adds its seconds to ``seconds[name]``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.missing: list[str] = []
        self.objects: dict[str, object] = {}

    def wrap(self, owner, attr: str, name: str, *, keep_self: bool = False) -> None:
        original = getattr(owner, attr, None)
        if original is None:
            self.missing.append(name)
            return

        def timed(*args, **kwargs):
            if keep_self and args:
                self.objects.setdefault(name, args[0])
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

        setattr(owner, attr, timed)


def instrument(timers: Timers, record: dict) -> None:
    """Timers around the phases of ``rnadiff train``."""
    import rnadiff.cli._train as cli_train
    from rnadiff import RNADiffusion
    from rnadiff.training import Trainer

    timers.wrap(cli_train, "_read", "read")
    timers.wrap(RNADiffusion, "__init__", "init", keep_self=True)
    timers.wrap(RNADiffusion, "train", "train_call")
    timers.wrap(RNADiffusion, "calibrate_effects", "calibrate")
    timers.wrap(RNADiffusion, "calibrate_spread", "calibrate")
    timers.wrap(RNADiffusion, "save", "save")
    fit = Trainer.fit

    def timed_fit(self, *args, on_checkpoint=None, **kwargs):
        """The loop's time, steps and batch size; checkpoints inside it timed apart."""

        def checkpoint(trainer):
            t = time.perf_counter()
            try:
                return on_checkpoint(trainer)
            finally:
                record["checkpoint_s"] = record.get("checkpoint_s", 0.0) + time.perf_counter() - t

        first, t0, cpu0 = self.step, time.perf_counter(), time.process_time()
        try:
            return fit(self, *args, on_checkpoint=checkpoint if on_checkpoint else None, **kwargs)
        finally:
            record["fit_s"] = record.get("fit_s", 0.0) + time.perf_counter() - t0
            record["fit_cpu_s"] = record.get("fit_cpu_s", 0.0) + time.process_time() - cpu0
            record["steps"] = record.get("steps", 0) + self.step - first
            record["batch_size"] = getattr(self.config, "batch_size", None)
            record["precision"] = getattr(self.config, "precision", None)

    Trainer.fit = timed_fit


def open_backed() -> None:
    """``rnadiff train`` reads the file with ``anndata.read_h5ad(path, backed="r")``."""
    import anndata as ad

    import rnadiff.cli._train as cli_train

    cli_train._read = lambda path, *args, **kwargs: ad.read_h5ad(path, backed="r")


def step_flops(model, batch_size: int) -> dict:
    """FLOPs of one forward pass of the denoiser on a training batch, from hooks on every
    ``nn.Linear`` (2 x rows x in x out); a training step is ~3 forward passes."""
    import torch
    from torch import nn

    denoiser = model.denoiser
    n_genes = len(model.preprocess.genes)
    total = {"flops": 0, "layers": 0}

    def hook(module, inputs, output):
        rows = inputs[0].numel() // module.in_features
        total["flops"] += 2 * rows * module.in_features * module.out_features
        total["layers"] += 1

    handles = [
        m.register_forward_hook(hook) for m in denoiser.modules() if isinstance(m, nn.Linear)
    ]
    try:
        obs = model.adata.obs.iloc[:batch_size]
        cond = model.engine.cond(obs)
        denoiser.train()
        with torch.no_grad():
            denoiser(torch.randn(len(obs), n_genes), torch.ones(len(obs)), cond)
    finally:
        denoiser.eval()
        for h in handles:
            h.remove()
    forward = total["flops"] * batch_size / len(obs)
    return {
        "n_genes_modelled": n_genes,
        "linear_layers": total["layers"],
        "forward_gflop": forward / 1e9,
        "step_gflop": 3 * forward / 1e9,
    }


def sample(model, n_cells: int) -> dict:
    """Time ``generate`` of ``n_cells`` cells spread over 20 (perturbation, cell type) pairs."""
    obs = model.adata.obs
    perts = [str(p) for p in obs["perturbation"].cat.categories]
    types = [str(t) for t in obs["cell_type"].cat.categories]
    conditions = [
        {"perturbation": p, "cell_type": types[i % len(types)]} for i, p in enumerate(perts)
    ]
    per = max(1, n_cells // len(conditions))
    t0 = time.perf_counter()
    out = model.generate(conditions, n_cells=per, progress=False)
    seconds = time.perf_counter() - t0
    return {
        "sample_cells": out.n_obs,
        "sample_s": seconds,
        "sample_cells_per_s": out.n_obs / seconds,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--result", type=Path, required=True)
    p.add_argument("--backed", action="store_true", help="pass --backed to rnadiff train")
    p.add_argument("--in-memory", action="store_true", help="pass --in-memory to rnadiff train")
    p.add_argument(
        "--open-backed",
        action="store_true",
        help="for a 'rnadiff train' without --backed: open the file backed here (the command's "
        "reader replaced), so the library's backed data path is measured",
    )
    p.add_argument("--sample-cells", type=int, default=20_000)
    p.add_argument("--no-calibration", action="store_true", help="no calibration after training")
    p.add_argument("--precision", default=None, help="pass --precision to rnadiff train")
    args = p.parse_args(argv)

    record: dict = {"tool": "rnadiff", "status": "started"}
    write = lambda: args.result.write_text(json.dumps(record, indent=1))  # noqa: E731
    timers = Timers()
    cli = ["train", "--data", args.data, "--out", args.out, *SETUP]
    cli += ["--max-steps", str(args.steps), "--threads", str(args.threads), "--quiet"]
    cli += ["--backed"] if args.backed else []
    cli += ["--in-memory"] if args.in_memory else []
    cli += ["--calibration-cells", "0", "--spread-cells", "0"] if args.no_calibration else []
    cli += ["--precision", args.precision] if args.precision else []
    record["command"] = "rnadiff " + " ".join(cli)
    record["backed_via"] = "cli" if args.backed else ("harness" if args.open_backed else None)
    write()
    t_start = time.perf_counter()
    try:
        import rnadiff
        from rnadiff.cli import app

        record["rnadiff_version"] = getattr(rnadiff, "__version__", None)
        if args.open_backed:
            open_backed()
        instrument(timers, record)
        app(cli, standalone_mode=False)
        record["status"] = "trained"
    except BaseException as err:  # MemoryError, SystemExit from typer, anything
        record["status"] = "failed"
        record["error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        record["traceback"] = traceback.format_exc()[-4000:]
    record["train_command_s"] = time.perf_counter() - t_start
    record |= {f"{k}_s": v for k, v in timers.seconds.items()}
    record["timers_missing"] = timers.missing
    record["peak_rss_train_mib"] = vm_hwm_mib()
    model = timers.objects.get("init")
    if model is not None and record.get("fit_s"):
        # everything between building the model and the first step (e.g. densifying), besides
        # building it; the loop and calibration are apart
        inside = record.get("fit_s", 0) + record.get("calibrate_s", 0)
        record["data_to_loop_s"] = record.get("train_call_s", 0) - inside
        record["preprocess_s"] = record.get("init_s", 0) + max(record["data_to_loop_s"], 0)
        loop = record["fit_s"] - record.get("checkpoint_s", 0)
        record["train_s"] = loop
        if record.get("steps") and record.get("batch_size"):
            record["train_cells_per_s"] = record["steps"] * record["batch_size"] / loop
            record["step_ms"] = 1000 * loop / record["steps"]
        # about T when the loop had its T threads' cores to itself; less: other work took them
        record["train_cpu_per_wall"] = record.get("fit_cpu_s", 0) / record["fit_s"]
    write()
    if record["status"] == "trained":
        batch = record.get("batch_size") or 128
        for name, job in (
            ("flops", lambda: step_flops(model, batch)),
            ("sampling", lambda: sample(model, args.sample_cells)),
        ):
            try:
                record |= job()
            except BaseException as err:
                record[f"{name}_error"] = f"{type(err).__name__}: {err}"[:500]
            write()
        record["status"] = "ok" if "sampling_error" not in record else "trained"
    record["peak_rss_mib"] = vm_hwm_mib()
    write()


if __name__ == "__main__":
    sys.exit(main())
