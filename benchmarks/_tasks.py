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
# tasks the peers run on (each peer gets the split files of the contract in peers/_contract.py)
PEER_TASKS = {"kang_loo_celltype"}


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
    raise SystemExit(f"unknown task {task!r}; choose from {BASE_TASKS + list(EXTRA_TASKS)}")


def with_parents(requested: list[str]) -> list[str]:
    """The base tasks to run for ``requested`` tasks (an extra task needs its parent)."""
    unknown = [t for t in requested if t not in BASE_TASKS and t not in EXTRA_TASKS]
    if unknown:
        raise SystemExit(f"unknown tasks {unknown}; choose from {BASE_TASKS + list(EXTRA_TASKS)}")
    return [
        t
        for t in BASE_TASKS
        if t in requested or any(EXTRA_TASKS[e][0] == t for e in requested if e in EXTRA_TASKS)
    ]
