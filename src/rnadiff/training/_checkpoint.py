"""Checkpoints as a folder of safetensors + JSON (no pickle), written atomically."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rnadiff._errors import InputError

FORMAT = "rnadiff-checkpoint"
VERSION = 1
META = "config.json"


def save_checkpoint(
    path: str | os.PathLike, meta: dict, tensors: dict[str, dict[str, torch.Tensor]]
):
    """Write ``meta`` to ``config.json`` and each tensor group to ``<group>.safetensors``.

    The folder is assembled beside the target and swapped in with renames, so a crash leaves
    either the previous checkpoint or the new one, never a half-written mix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        for group, group_tensors in tensors.items():
            contiguous = {k: v.detach().cpu().contiguous() for k, v in group_tensors.items()}
            save_file(contiguous, tmp / f"{group}.safetensors")
        meta = {"format": FORMAT, "version": VERSION, "files": sorted(tensors), **meta}
        with open(tmp / META, "w") as fh:
            json.dump(meta, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old)  # replaces the fresh empty folder
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:
                os.replace(old, path)  # put the previous checkpoint back
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load_checkpoint(path: str | os.PathLike) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
    """Read a checkpoint folder written by :func:`save_checkpoint`: ``(meta, tensors)``."""
    path = Path(path)
    meta_file = path / META
    if not meta_file.is_file():
        raise InputError(f"{path} is not an rnadiff checkpoint (no {META})")
    try:
        with open(meta_file) as fh:
            meta = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{meta_file} is corrupt (not JSON): {err}") from None
    if meta.get("format") != FORMAT:
        raise InputError(
            f"{meta_file} is not an rnadiff checkpoint (format {meta.get('format')!r})"
        )
    if meta.get("version", 0) > VERSION:
        raise InputError(f"{path} was written by a newer rnadiff (format {meta['version']})")
    tensors = {}
    for group in meta["files"]:
        file = path / f"{group}.safetensors"
        if not file.is_file():
            raise InputError(f"checkpoint {path} is incomplete: {file.name} is missing")
        tensors[group] = load_file(file)
    return meta, tensors


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict, dict[str, torch.Tensor]]:
    """Split an optimizer state dict into JSON (hyper-parameters) and named tensors."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, pstate in state["state"].items():
        for name, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{name}"] = value
            else:
                scalars[f"{pid}.{name}"] = value
    return {"param_groups": state["param_groups"], "scalars": scalars}, tensors


def optimizer_from_tensors(meta: dict, tensors: dict[str, torch.Tensor]) -> dict:
    """Rebuild the optimizer state dict written by :func:`optimizer_to_tensors`."""
    state: dict[int, dict] = {}
    for key, value in [*tensors.items(), *meta["scalars"].items()]:
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}
