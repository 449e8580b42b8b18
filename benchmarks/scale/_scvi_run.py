"""One scVI measurement, run by ``measure.py`` with scVI's own venv (``make peers``).

    .peers/scvi/bin/python benchmarks/scale/_scvi_run.py --data FILE --steps N --threads T
        --result result.json [--backed]

scVI (scvi-tools' ``SCVI``, default network) on the counts in X of the same file: read it
(backed when ``--backed``: scvi-tools reads an AnnData opened ``backed="r"``; if that fails the
error is recorded and the file is read into memory), ``SCVI.setup_anndata``, then ``train``
for ``N`` optimizer steps at batch size 128 on the CPU. Training cells/s is steps x batch size
over the time from the first batch's start to the last batch's end (a Lightning callback), so
Lightning's set-up is left out as rnadiff's is.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path


def vm_hwm_mib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--result", type=Path, required=True)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--backed", action="store_true")
    args = p.parse_args(argv)
    record: dict = {"tool": "scvi", "status": "started", "batch_size": args.batch_size}
    write = lambda: args.result.write_text(json.dumps(record, indent=1))  # noqa: E731
    write()
    try:
        import anndata as ad
        import lightning.pytorch as pl
        import scvi
        import torch

        torch.set_num_threads(args.threads)
        scvi.settings.num_threads = args.threads
        scvi.settings.seed = 0
        record["scvi_version"] = scvi.__version__

        class StepTimer(pl.Callback):
            steps, first, last, cpu_first, cpu_last = 0, None, None, None, None

            def on_train_batch_start(self, trainer, module, batch, batch_idx):
                if self.first is None:
                    self.first, self.cpu_first = time.perf_counter(), time.process_time()

            def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
                self.steps += 1
                self.last, self.cpu_last = time.perf_counter(), time.process_time()

        t0 = time.perf_counter()
        adata, record["mode"] = None, "memory"
        if args.backed:
            try:
                adata = ad.read_h5ad(args.data, backed="r")
                scvi.model.SCVI.setup_anndata(adata)
                record["mode"] = "backed"
            except Exception as err:
                record["backed_error"] = f"{type(err).__name__}: {err}"[:500]
                adata = None
        if adata is None:
            adata = ad.read_h5ad(args.data)
            scvi.model.SCVI.setup_anndata(adata)
        record["read_setup_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        model = scvi.model.SCVI(adata)
        record["preprocess_s"] = record["read_setup_s"] + time.perf_counter() - t0
        timer = StepTimer()
        t0 = time.perf_counter()
        model.train(
            max_epochs=max(1, -(-args.steps * args.batch_size // adata.n_obs) + 1),
            max_steps=args.steps,
            batch_size=args.batch_size,
            accelerator="cpu",
            devices=1,
            enable_progress_bar=False,
            early_stopping=False,
            callbacks=[timer],
        )
        record["train_call_s"] = time.perf_counter() - t0
        record["steps"] = timer.steps
        record["train_s"] = timer.last - timer.first
        # from the first batch's start to the last one's end: every step, data loading included
        record["train_cells_per_s"] = timer.steps * args.batch_size / record["train_s"]
        record["step_ms"] = 1000 * record["train_s"] / timer.steps
        record["train_cpu_per_wall"] = (timer.cpu_last - timer.cpu_first) / record["train_s"]
        record["n_genes_modelled"] = int(adata.n_vars)
        record["status"] = "ok"
    except BaseException as err:
        record["status"] = "failed"
        record["error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        record["traceback"] = traceback.format_exc()[-4000:]
    record["peak_rss_train_mib"] = record["peak_rss_mib"] = vm_hwm_mib()
    write()


if __name__ == "__main__":
    sys.exit(main())
