"""The benchmark's tasks: each a function of the seed that yields its splits.

A base task trains rnadiff (and runs baselines and peers) on each of its splits; an extra task
(design, ranking) runs on the model trained for its parent task's split.
"""

from __future__ import annotations

from rnadiff import datasets
from rnadiff.data import _splits as splits
from rnadiff.evaluation import _design_tasks as design_tasks

# design and ranking tasks run on the model trained for their parent task
EXTRA_TASKS = {
    "papalexi_rank": ("papalexi_seen", design_tasks.papalexi_rank_rows),
    "papalexi_marker_rank": ("papalexi_seen", design_tasks.papalexi_marker_rows),
    "kang_design": ("kang_loo_celltype", design_tasks.kang_design_rows),
}
BASE_TASKS = [
    "kang_loo_celltype",
    "papalexi_seen",
    "papalexi_unseen",
    "hsmm_time",
    "kang9k_heldout",
]
# inner tasks: built from a base task's training cells only, for choosing defaults without
# looking at the held-out cells the benchmark scores (studies run on them)
INNER_TASKS = ["kang9k_inner", "hsmm_inner"]
# tasks the peers run on (each peer gets the split files of the contract in peers/_contract.py)
PEER_TASKS = {"kang_loo_celltype"}
# standalone tasks: not held-out predictions of conditions but their own procedure (denoising,
# fate): ``name -> function(seed, config) -> (rows, timings)``, tidy rows as every task's
# (task, fold, seed, evaluation, method, metric, value); one job per seed
STANDALONE_TASKS: dict = {}


def register_standalone(name: str):
    """Decorator: register ``fn(seed, config) -> (rows, timings)`` as the task ``name``."""

    def wrap(fn):
        STANDALONE_TASKS[name] = fn
        return fn

    return wrap


def task_splits(task: str, seed: int):
    """The splits of ``task`` at ``seed``."""
    if task == "kang_loo_celltype":
        return splits.kang_loo_celltype(datasets.load("kang2018_ifnb"), seed=seed)
    if task in ("papalexi_seen", "papalexi_unseen"):
        data = splits.papalexi_clean(datasets.load("papalexi2021"))
        return getattr(splits, task)(data, seed=seed)
    if task == "hsmm_time":
        return splits.hsmm_time(datasets.load("trapnell2014_hsmm"), seed=seed)
    if task == "kang9k_heldout":
        return splits.kang9k_heldout(datasets.load("kang2018_ifnb_9k"), seed=seed)
    if task in INNER_TASKS:
        return _inner(task, seed)
    raise SystemExit(f"unknown task {task!r}; choose from {all_tasks()}")


def _inner(task: str, seed: int):
    """The inner split of a base task: the same kind of held-out prediction, made within the
    outer split's training cells (Kang 9k: half of them held out again; HSMM: 24 h held out
    of the 0 / 24 / 72 h training cells and predicted from 0 h)."""
    import dataclasses

    if task == "kang9k_inner":
        (outer,) = task_splits("kang9k_heldout", seed)
        (split,) = splits.kang9k_heldout(outer.train, seed=seed)
    else:
        (outer,) = task_splits("hsmm_time", seed)
        (split,) = splits.hsmm_time(outer.train, seed=seed, held_out=24)
    yield dataclasses.replace(split, task=task)


def all_tasks() -> list[str]:
    """Every task name the harness knows (inner tasks are for studies)."""
    _load_standalone()
    return BASE_TASKS + list(EXTRA_TASKS) + list(STANDALONE_TASKS)


def with_parents(requested: list[str]) -> list[str]:
    """The base and standalone tasks to run for ``requested`` tasks (an extra task needs its
    parent)."""
    known = all_tasks() + INNER_TASKS
    unknown = [t for t in requested if t not in known]
    if unknown:
        raise SystemExit(f"unknown tasks {unknown}; choose from {all_tasks()}")
    base = [
        t
        for t in BASE_TASKS + INNER_TASKS
        if t in requested or any(EXTRA_TASKS[e][0] == t for e in requested if e in EXTRA_TASKS)
    ]
    return base + [t for t in STANDALONE_TASKS if t in requested]


def n_jobs(task: str) -> int:
    """Jobs of one seed of ``task``: one per split (standalone tasks: one)."""
    return 1 if task in STANDALONE_TASKS else len(list(task_splits(task, 0)))


def _load_standalone() -> None:
    """Import the modules that register standalone tasks (each registers on import)."""
    import importlib

    for name in STANDALONE_MODULES:
        importlib.import_module(name)


# modules of the harness whose import registers standalone tasks
STANDALONE_MODULES: tuple[str, ...] = ("_drug_tasks", "_denoise_tasks")
