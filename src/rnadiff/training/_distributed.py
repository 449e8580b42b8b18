"""Several processes training one model (``torchrun``): PyTorch DistributedDataParallel.

``torchrun --nproc_per_node N -m rnadiff.cli train ...`` (or the same on several nodes with
torchrun's ``--nnodes``/``--rdzv-*`` flags) starts N processes with ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` set; :func:`init_from_env` joins them into a process group (gloo on CPU, NCCL on
GPUs). The first process (rank 0) computes what is computed once (preprocessing, statistics,
calibration) and hands it to the others (:func:`shared`); every process trains on its share of
each global minibatch; only rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")
logger = logging.getLogger("rnadiff")


def active() -> bool:
    """Whether this process is one of several in a process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this process writes (rank 0, or the only one)."""
    return rank() == 0


def init_from_env(device: str = "auto") -> str:
    """Join the process group torchrun describes in the environment (nothing without it);
    returns the device this process trains on (its own GPU under NCCL)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (
        dist.is_available() and dist.is_initialized()
    ):
        return device
    cuda = device != "cpu" and torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend)
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not is_main():  # one process says what happens
        logging.getLogger("rnadiff").setLevel(logging.WARNING)
    logger.info(
        "rnadiff: process group of %d processes (%s), this is rank %d",
        world_size(),
        backend,
        rank(),
    )
    return device


def shared(compute: Callable[[], T]) -> T:
    """``compute()`` on rank 0, its result handed to every process (each process computes it
    itself when there is no process group)."""
    if not active():
        return compute()
    box = [compute() if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
