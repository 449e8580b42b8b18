"""Checkpoints as a folder of safetensors + JSON (no pickle), written atomically."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rnadiff._errors import InputError
from rnadiff.data._io import check_replaceable, io_error

FORMAT = "rnadiff-checkpoint"
VERSION = 2  # 2: manifest.json with each file's SHA-256
META = "config.json"
MANIFEST = "manifest.json"
_CHUNK = 1 << 20


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def checkpoint_files(folder: str | os.PathLike) -> list[str] | None:
    """The files of the rnadiff checkpoint in ``folder`` (``None``: not a checkpoint)."""
    folder = Path(folder)
    try:
        if (folder / MANIFEST).is_file():
            manifest = json.loads((folder / MANIFEST).read_text())
            if manifest.get("format") == FORMAT:
                return [MANIFEST, *manifest.get("files", {})]
        if (folder / META).is_file():  # format 1: no manifest
            meta = json.loads((folder / META).read_text())
            if meta.get("format") == FORMAT:
                return [META, *(f"{g}.safetensors" for g in meta.get("files", []))]
    except (OSError, ValueError):
        return None
    return None


def save_checkpoint(
    path: str | os.PathLike, meta: dict, tensors: dict[str, dict[str, torch.Tensor]]
):
    """Write ``meta`` to ``config.json``, each tensor group to ``<group>.safetensors`` and a
    ``manifest.json`` with every file's SHA-256.

    The folder is assembled beside the target and swapped in with renames, so a crash or a
    full disk leaves either the previous checkpoint or the new one. A target folder that is
    not empty and not an rnadiff checkpoint (or that holds other files) is refused.
    """
    path = Path(path)
    check_replaceable(path, ours=checkpoint_files, what="model folder")
    kept = "the previous checkpoint is intact" if path.exists() else "nothing was written"
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        files = {}
        for group, group_tensors in tensors.items():
            contiguous = {k: v.detach().cpu().contiguous() for k, v in group_tensors.items()}
            save_file(contiguous, tmp / f"{group}.safetensors")
        meta = {"format": FORMAT, "version": VERSION, "files": sorted(tensors), **meta}
        _write_json(tmp / META, meta)
        for name in sorted(p.name for p in tmp.iterdir()):
            files[name] = _sha256(tmp / name)
        manifest = {"format": FORMAT, "version": VERSION, "files": files}
        _write_json(tmp / MANIFEST, manifest)
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
    except OSError as err:
        raise io_error(err, f"the checkpoint in {path}", kept) from None
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _write_json(file: Path, data: dict) -> None:
    with open(file, "w") as fh:
        json.dump(data, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())


def _read_json(file: Path) -> dict:
    try:
        data = json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{file} is corrupt (not JSON): {err}") from None
    if not isinstance(data, dict):
        raise InputError(f"{file} is corrupt (not a JSON object)")
    return data


def load_checkpoint(path: str | os.PathLike) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
    """Read a checkpoint folder written by :func:`save_checkpoint`: ``(meta, tensors)``.

    Every file listed in the manifest must be present with its SHA-256; a missing, truncated,
    edited or foreign file is an :class:`~rnadiff.InputError` naming it.
    """
    path = Path(path)
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is a file"
        raise InputError(f"{path} {what}: it is not an rnadiff checkpoint (a model folder)")
    meta_file = path / META
    manifest_file = path / MANIFEST
    if not meta_file.is_file() and not manifest_file.is_file():
        raise InputError(f"{path} is not an rnadiff checkpoint (no {META})")
    if manifest_file.is_file():
        manifest = _read_json(manifest_file)
        if manifest.get("format") != FORMAT:
            raise InputError(f"{manifest_file} is not an rnadiff checkpoint manifest")
        if manifest.get("version", 0) > VERSION:
            version = manifest["version"]
            raise InputError(f"{path} was written by a newer rnadiff (format {version})")
        listed = manifest.get("files")
        if not isinstance(listed, dict) or META not in listed:
            raise InputError(f"{manifest_file} is corrupt: it lists no {META}")
        for name, digest in listed.items():
            if not isinstance(name, str) or Path(name).name != name or name.startswith("."):
                raise InputError(f"{manifest_file} is corrupt: {name!r} is not a plain file name")
            file = path / name
            if not file.is_file():
                raise InputError(f"checkpoint {path} is incomplete: {name} is missing")
            if _sha256(file) != digest:
                raise InputError(
                    f"{file} is corrupt or was edited: its SHA-256 differs from the manifest's"
                )
    meta = _read_json(meta_file)
    if not manifest_file.is_file() and meta.get("version", 0) >= 2:
        raise InputError(f"checkpoint {path} is incomplete: {MANIFEST} is missing")
    if meta.get("format") != FORMAT:
        raise InputError(
            f"{meta_file} is not an rnadiff checkpoint (format {meta.get('format')!r})"
        )
    if meta.get("version", 0) > VERSION:
        raise InputError(f"{path} was written by a newer rnadiff (format {meta['version']})")
    tensors = {}
    for group in meta.get("files", []):
        file = path / f"{group}.safetensors"
        if not file.is_file():
            raise InputError(f"checkpoint {path} is incomplete: {file.name} is missing")
        try:
            tensors[group] = load_file(file)
        except Exception as err:  # safetensors raises its own error types for bad files
            raise InputError(f"{file} is not a readable safetensors file: {err}") from None
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
