"""The command-line contract shared by the peer runners (``run_scgen.py``, ``run_cpa.py``, ...).

Each runner is executed with its own peer's venv python, so this module imports only what all
peer venvs have (numpy, pandas, anndata, scipy) and nothing from ``rnadiff``.

    --train TRAIN.h5ad --source SOURCE.h5ad --out PRED.h5ad --perturbation-key K --control CTRL
    --target TGT [--target TGT2 ...] [--cell-type-key C] [--batch-key B] --seed N
    --budget {quick,full} [--max-epochs N] [--threads N]

Inputs have raw counts in ``layers['counts']`` and log-normalized values (1e4 + log1p) in X,
with identical genes. ``--target`` may be repeated: one training, then one prediction per
target from the same source cells. The context of a cell (what the per-context shifts of the
runners average over, and what the source cells are matched by) is ``--cell-type-key``, else
``--batch-key``, else one context for all cells (:attr:`Task.context_key`).

The output has one predicted cell per source cell and target (blocks in the order of the
targets), the same var_names in the same order, X = predicted log-normalized expression (dense
float32, >= 0), obs with the perturbation column set to the block's target and the cell-type /
batch columns (when given) copied from the source cell, and ``uns['peer']`` = {name, version,
train_s, predict_s, epochs, budget, notes, seed, settings, targets, history, converged,
convergence} (``settings``, ``targets``, ``history``, ``converged`` and ``convergence`` are JSON
strings; see :func:`write`).

A runner that fails exits with status 1 and one line ``PEER failed: REASON`` on stderr.
"""

from __future__ import annotations

import argparse
import itertools
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


CONTEXT_COLUMN = "peer_context"  # the one context when neither a cell-type nor a batch key is given


@dataclass
class Task:
    """Parsed command line and loaded data of one run."""

    args: argparse.Namespace
    train: object  # anndata.AnnData
    source: object  # anndata.AnnData

    @property
    def targets(self) -> list[str]:
        """The perturbations to predict, in the order of the output's blocks."""
        return list(self.args.targets)

    @property
    def context_key(self) -> str:
        """obs column of the context: the cell type, else the batch, else one shared context."""
        return self.args.cell_type_key or self.args.batch_key or CONTEXT_COLUMN


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
    # training loss per step / epoch (one float each); stored binned, with a convergence check
    history: list = field(default_factory=list)
    history_unit: str = "step"


def parse_args(name: str, argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"run_{name}.py", description=f"{name} peer runner")
    p.add_argument("--train", required=True, type=Path, help="training cells (.h5ad)")
    p.add_argument("--source", required=True, type=Path, help="control cells to map (.h5ad)")
    p.add_argument("--out", required=True, type=Path, help="predicted cells (.h5ad)")
    p.add_argument("--perturbation-key", required=True)
    p.add_argument("--control", required=True, help="control label in --perturbation-key")
    p.add_argument(
        "--target",
        required=True,
        action="append",
        dest="targets",
        help="perturbation to predict; repeat for several (one training, one prediction each)",
    )
    p.add_argument("--cell-type-key", default=None, help="obs column of the cell type (optional)")
    p.add_argument(
        "--batch-key",
        default=None,
        help="obs column of a batch / replicate (optional; the context when no cell-type key)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", choices=("quick", "full"), default="quick")
    p.add_argument("--max-epochs", type=int, default=None, help="override the budget's epochs")
    p.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("PEER_THREADS", "1")),
        help="CPU threads for torch / XLA / BLAS (default 1, or $PEER_THREADS)",
    )
    args = p.parse_args(argv)
    if len(set(args.targets)) != len(args.targets):
        p.error(f"--target given twice: {args.targets}")
    if args.control in args.targets:
        p.error(f"--target {args.control!r} is the control")
    args.target = args.targets[0]  # runners written for one target read this
    return args


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
    keys = [k for k in (args.perturbation_key, args.cell_type_key, args.batch_key) if k]
    for name, a in (("train", train), ("source", source)):
        for key in keys:
            if key not in a.obs:
                raise ValueError(f"{name}.obs has no column {key!r}")
            a.obs[key] = a.obs[key].astype(str)
        if "counts" not in a.layers:
            raise ValueError(f"{name} has no layers['counts']")
        if not (args.cell_type_key or args.batch_key):
            a.obs[CONTEXT_COLUMN] = "all"
    labels = set(train.obs[args.perturbation_key])
    for lab in (args.control, *args.targets):
        if lab not in labels:
            raise ValueError(f"{lab!r} is not a value of train.obs[{args.perturbation_key!r}]")
    if source.n_obs == 0:
        raise ValueError("source has no cells")
    return Task(args=args, train=train, source=source)


def context_shifts(task: Task, z: np.ndarray, target: str) -> list[np.ndarray]:
    """Per training context with both labels: mean(z | target) - mean(z | control).

    ``z`` holds one row per training cell (expression, or a latent). Runners that add a latent
    shift average these with equal weight per context (as the additive baseline does).
    """
    obs, pk = task.train.obs, task.args.perturbation_key
    out = []
    for ctx in sorted(set(obs[task.context_key])):
        is_ctx = (obs[task.context_key] == ctx).to_numpy()
        ctrl = is_ctx & (obs[pk] == task.args.control).to_numpy()
        pert = is_ctx & (obs[pk] == target).to_numpy()
        if ctrl.any() and pert.any():
            out.append(z[pert].mean(0) - z[ctrl].mean(0))
    if not out:
        raise ValueError(f"no training context has both {task.args.control!r} and {target!r} cells")
    return out


def convergence(losses, *, tol: float = 0.02) -> dict:
    """Did the training loss level off? Mean of the last 10% of the steps vs the 10% before.

    ``converged`` when the loss fell by less than ``tol`` (relative) between the two windows;
    ``None`` when there are fewer than 20 values (too short to tell).
    """
    x = np.asarray([float(v) for v in losses], dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < 20:
        return {"converged": None, "rule": "fewer than 20 loss values", "n": int(x.size)}
    w = max(1, x.size // 10)
    last, prev = float(x[-w:].mean()), float(x[-2 * w : -w].mean())
    drop = (prev - last) / abs(prev) if prev else 0.0
    return {
        "converged": bool(drop < tol),
        "last10_mean": last,
        "prev10_mean": prev,
        "first10_mean": float(x[:w].mean()),
        "relative_drop": drop,
        "rule": f"(prev10 - last10) / prev10 < {tol}",
        "n": int(x.size),
    }


def binned(losses, *, n_bins: int = 100) -> list[list[float]]:
    """``[[last step of the bin (1-based), mean loss], ...]``: a curve small enough for uns."""
    x = np.asarray([float(v) for v in losses], dtype=np.float64)
    if x.size == 0:
        return []
    edges = np.unique(np.linspace(0, x.size, min(n_bins, x.size) + 1).astype(int))
    return [[int(b), float(x[a:b].mean())] for a, b in itertools.pairwise(edges)]


def pca_basis(x: np.ndarray, n_comps: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and the first ``n_comps`` principal axes (rows) of ``x`` (cells x genes), by SVD."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean, vt[:n_comps]


def pca_roundtrip(x: np.ndarray, mean: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Project ``x`` onto the axes and back (what decoding from a PCA space keeps)."""
    x = np.asarray(x, dtype=np.float64)
    return (mean + (x - mean) @ axes.T @ axes).astype(np.float32)


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
    targets, n_src = task.targets, source.n_obs
    cov_keys = [k for k in (args.cell_type_key, args.batch_key) if k]
    if X.shape[0] == n_src * len(targets):  # one block of source cells per target
        index = [
            f"{n}-pred" if len(targets) == 1 else f"{n}-pred-{t}"
            for t in targets
            for n in source.obs_names
        ]
        cols = {args.perturbation_key: np.repeat(targets, n_src)}
        for k in cov_keys:
            cols[k] = np.tile(source.obs[k].to_numpy(), len(targets))
    elif len(targets) == 1:  # a runner that returns another number of cells
        index = [f"pred-{i}" for i in range(X.shape[0])]
        cols = {args.perturbation_key: [args.target] * X.shape[0]}
        for k in cov_keys:
            values = sorted(set(source.obs[k]))
            cols[k] = [values[0] if len(values) == 1 else ",".join(values)] * X.shape[0]
    else:
        raise ValueError(
            f"prediction has {X.shape[0]} cells, expected {n_src} source cells x "
            f"{len(targets)} targets"
        )
    obs = pd.DataFrame(cols, index=index)
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
        "targets": json.dumps(targets),
        # [[step, mean loss of the bin], ...] in units of history_unit; [] when not recorded
        "history": json.dumps(binned(pred.history)),
        "history_unit": pred.history_unit,
    }
    check = convergence(pred.history) if len(pred.history) else {"converged": None}
    out.uns["peer"]["converged"] = json.dumps(check["converged"])  # true / false / null
    out.uns["peer"]["convergence"] = json.dumps(check)
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
    conv = convergence(pred.history) if len(pred.history) else {"converged": None}
    first, prev, last = (
        conv.get(k, float("nan")) for k in ("first10_mean", "prev10_mean", "last10_mean")
    )
    print(
        f"{name}: wrote {args.out} ({pred.X.shape[0]} cells x {pred.X.shape[1]} genes) "
        f"train {pred.train_s:.1f} s, predict {pred.predict_s:.1f} s, "
        f"total {time.perf_counter() - t0:.1f} s; converged {conv['converged']} "
        f"(loss first/prev/last 10%: {first:.4g} / {prev:.4g} / {last:.4g})",
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
