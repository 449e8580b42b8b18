"""The command-line contract shared by the peer runners (``run_scgen.py``, ``run_cpa.py``, ...).

Each runner is executed with its own peer's venv python, so this module imports only what all
peer venvs have (numpy, pandas, anndata, scipy) and nothing from ``rnadiff``.

    --train TRAIN.h5ad --source SOURCE.h5ad --out PRED.h5ad --perturbation-key K --control CTRL
    --target TGT --cell-type-key C --seed N --budget {quick,full} [--max-epochs N]

Inputs have raw counts in ``layers['counts']`` and log-normalized values (1e4 + log1p) in X,
with identical genes. The output has one predicted cell per source cell, the same var_names in
the same order, X = predicted log-normalized expression (dense float32, >= 0), obs with the
perturbation and cell-type columns set to the target, and ``uns['peer']`` = {name, version,
train_s, predict_s, epochs, budget, notes, seed, settings}.

A runner that fails exits with status 1 and one line ``PEER failed: REASON`` on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TARGET_SUM = 1e4


@dataclass
class Task:
    """Parsed command line and loaded data of one run."""

    args: argparse.Namespace
    train: object  # anndata.AnnData
    source: object  # anndata.AnnData


@dataclass
class Prediction:
    """What a runner returns: predicted log-normalized cells and its bookkeeping."""

    X: np.ndarray
    version: str
    train_s: float
    predict_s: float
    epochs: int
    notes: str
    settings: dict = field(default_factory=dict)
    layers: dict = field(default_factory=dict)  # optional extra predictions, same shape as X


def parse_args(name: str, argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"run_{name}.py", description=f"{name} peer runner")
    p.add_argument("--train", required=True, type=Path, help="training cells (.h5ad)")
    p.add_argument("--source", required=True, type=Path, help="control cells to map (.h5ad)")
    p.add_argument("--out", required=True, type=Path, help="predicted cells (.h5ad)")
    p.add_argument("--perturbation-key", required=True)
    p.add_argument("--control", required=True, help="control label in --perturbation-key")
    p.add_argument("--target", required=True, help="perturbation label to predict")
    p.add_argument("--cell-type-key", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", choices=("quick", "full"), default="quick")
    p.add_argument("--max-epochs", type=int, default=None, help="override the budget's epochs")
    p.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("PEER_THREADS", "1")),
        help="CPU threads for torch / XLA / BLAS (default 1, or $PEER_THREADS)",
    )
    return p.parse_args(argv)


def limit_threads(n: int) -> None:
    """Use ``n`` CPU threads in torch, XLA (JAX) and BLAS.

    On the shared 2-core machine two intra-op threads were up to 20x slower than one whenever
    another job held a core (every parallel op waits for a descheduled thread), so the default
    is 1. XLA reads its flags when JAX is first imported: call this before importing JAX.
    """
    n = max(1, int(n))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    if n == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_cpu_multi_thread_eigen" not in flags:
            flags += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = flags.strip()
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:
        pass


def seed_everything(seed: int) -> None:
    """Seed python, numpy and (when importable) torch; JAX keys are seeded by each runner."""
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - the legacy global state is what the tools draw from
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass


def dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x)


def log_normalize(counts) -> np.ndarray:
    """``log1p(x / total * 1e4)`` per cell, float32 (for tools that return counts)."""
    x = dense(counts).astype(np.float64)
    x = np.clip(x, 0, None)
    totals = x.sum(axis=1, keepdims=True)
    totals[totals == 0] = 1.0
    return np.log1p(x * (TARGET_SUM / totals)).astype(np.float32)


def load(args: argparse.Namespace) -> Task:
    import anndata as ad

    train, source = ad.read_h5ad(args.train), ad.read_h5ad(args.source)
    if list(train.var_names) != list(source.var_names):
        raise ValueError("train and source have different genes (var_names)")
    for name, a in (("train", train), ("source", source)):
        for key in (args.perturbation_key, args.cell_type_key):
            if key not in a.obs:
                raise ValueError(f"{name}.obs has no column {key!r}")
        if "counts" not in a.layers:
            raise ValueError(f"{name} has no layers['counts']")
        a.obs[args.perturbation_key] = a.obs[args.perturbation_key].astype(str)
        a.obs[args.cell_type_key] = a.obs[args.cell_type_key].astype(str)
    labels = set(train.obs[args.perturbation_key])
    for lab in (args.control, args.target):
        if lab not in labels:
            raise ValueError(f"{lab!r} is not a value of train.obs[{args.perturbation_key!r}]")
    if source.n_obs == 0:
        raise ValueError("source has no cells")
    return Task(args=args, train=train, source=source)


def write(task: Task, name: str, pred: Prediction) -> None:
    import anndata as ad
    import pandas as pd

    args, source = task.args, task.source
    X = np.asarray(pred.X, dtype=np.float32)
    if X.ndim != 2 or X.shape[1] != source.n_vars:
        raise ValueError(f"prediction has shape {X.shape}, expected (n, {source.n_vars})")
    if not np.isfinite(X).all():
        raise ValueError(f"prediction has {int((~np.isfinite(X)).sum())} non-finite values")
    X = np.clip(X, 0, None)
    cell_types = sorted(set(source.obs[args.cell_type_key]))
    cell_type = cell_types[0] if len(cell_types) == 1 else ",".join(cell_types)
    if X.shape[0] == source.n_obs:
        index = [f"{n}-pred" for n in source.obs_names]
        ct = source.obs[args.cell_type_key].to_numpy()
    else:
        index = [f"pred-{i}" for i in range(X.shape[0])]
        ct = [cell_type] * X.shape[0]
    obs = pd.DataFrame(
        {args.perturbation_key: [args.target] * X.shape[0], args.cell_type_key: ct}, index=index
    )
    for k in obs:
        obs[k] = obs[k].astype("category")
    out = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=source.var_names.copy()))
    for key, value in pred.layers.items():
        out.layers[key] = np.clip(np.asarray(value, dtype=np.float32), 0, None)
    out.uns["peer"] = {
        "name": name,
        "version": pred.version,
        "train_s": float(pred.train_s),
        "predict_s": float(pred.predict_s),
        "epochs": int(pred.epochs),
        "budget": args.budget,
        "seed": int(args.seed),
        "notes": pred.notes,
        "settings": json.dumps(pred.settings, default=str),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out.write_h5ad(args.out)


def run_once(name: str, run: Callable[[Task], Prediction], argv=None) -> str | None:
    """Parse, load, seed, run and write one task; ``None`` on success, else the failure reason
    (one line, also printed on stderr)."""
    try:
        args = parse_args(name, argv)
    except SystemExit as e:  # argparse already printed its usage
        raise SystemExit(2 if e.code else 0) from None
    t0 = time.perf_counter()
    try:
        limit_threads(args.threads)
        seed_everything(args.seed)
        task = load(args)
        pred = run(task)
        write(task, name, pred)
    except BaseException as e:
        if isinstance(e, SystemExit) and e.code in (0, None):
            raise
        if os.environ.get("PEER_DEBUG"):
            traceback.print_exc()
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:500]
        print(f"{name} failed: {reason}", file=sys.stderr, flush=True)
        return reason
    print(
        f"{name}: wrote {args.out} ({pred.X.shape[0]} cells x {pred.X.shape[1]} genes) "
        f"train {pred.train_s:.1f} s, predict {pred.predict_s:.1f} s, "
        f"total {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    return None


def serve(name: str, run: Callable[[Task], Prediction]) -> None:
    """Run one task per line of stdin, each a JSON list of command-line arguments.

    For every line, one JSON line is written to stdout: ``{"ok": true}`` or ``{"ok": false,
    "error": REASON}``. Anything else the tools print goes to stderr. A benchmark worker keeps one
    server per peer, so the peer's imports (10-20 s for pertpy or cpa) are paid once, not once
    per fold. Every task is seeded as in a fresh process (:func:`seed_everything`, and each
    runner's own seeding), so its prediction is the one a separate run would give.
    """
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # what the tools print (also from C) must not mix with the replies
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reason = run_once(name, run, json.loads(line))
        except SystemExit as e:  # bad arguments
            reason = f"invalid arguments (exit status {e.code})"
        replies.write(json.dumps({"ok": reason is None, "error": reason}) + "\n")
        replies.flush()


def main(name: str, run: Callable[[Task], Prediction], argv=None) -> None:
    """The runner's command line: one task, or ``--serve`` (see :func:`serve`).

    On any failure of a task, exit 1 with one line ``NAME failed: REASON`` on stderr."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv == ["--serve"]:
        serve(name, run)
        return
    if run_once(name, run, argv) is not None:
        raise SystemExit(1)


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0
