"""Files and folders the project writes: atomically, and never over something of the user's.

Every file is written to a temporary file in the same folder, flushed to disk, and renamed over
the target, so a crash or a full disk leaves either the previous file or the new one, never a
half-written mix. A folder (a model checkpoint) is replaced only when it is absent, empty, or
one of ours (:func:`check_replaceable`); an output file only when it is absent or rnadiff wrote
it, and never when the same command reads it (:func:`check_file_replaceable`): ``.h5ad`` files
carry a root attribute and ``.png`` files a text chunk saying so, a ``.csv`` is ours when its
header is the one about to be written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from rnadiff._errors import InputError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
MARK = "rnadiff"  # h5ad root attribute / PNG text key of the files rnadiff writes
_INPUTS: set[Path] = set()  # files this process reads as a command's inputs (never replaced)


def protect(*paths: str | os.PathLike) -> None:
    """Record ``paths`` as inputs of the running command: :func:`check_file_replaceable`
    refuses to write over them."""
    _INPUTS.update(Path(p).resolve() for p in paths)


def forget_inputs() -> None:
    """Start a new command: no file is an input yet (a process may run several commands)."""
    _INPUTS.clear()


def written_by_rnadiff(path: str | os.PathLike, header: str | None = None) -> bool:
    """Whether rnadiff wrote the file ``path``: an ``.h5ad`` with its root attribute, a
    ``.png`` with its text chunk, a ``.csv`` whose first line is ``header`` (unknown: not)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".h5ad":
            import h5py

            with h5py.File(path, "r") as f:
                return MARK in f.attrs
        if suffix == ".png":
            from PIL import Image

            with Image.open(path) as im:
                return str(im.info.get("Software", "")).startswith(MARK)
        if suffix == ".csv" and header is not None:
            with open(path, encoding="utf-8", errors="replace") as fh:
                return fh.readline().rstrip("\r\n") == header.rstrip("\r\n")
    except Exception:  # unreadable as that kind of file: not ours
        return False
    return False


def check_file_replaceable(path: str | os.PathLike, what: str, header: str | None = None):
    """Refuse an output file that is an input of the running command (:func:`protect`), or
    that exists and was not written by rnadiff (:func:`written_by_rnadiff`; a ``.csv`` without
    ``header`` is not checked for that, only as an input)."""
    path = Path(path)
    if path.resolve() in _INPUTS:
        raise InputError(f"{what} {path} is an input of this command; give a new file name")
    if not path.is_file():
        return
    if path.suffix.lower() == ".csv" and header is None:
        return  # checked when the table is known (write_csv)
    if not written_by_rnadiff(path, header):
        raise InputError(
            f"{what} {path} already exists and was not written by rnadiff (or was changed "
            "since); give a new file name, or remove it first"
        )


def io_error(err: OSError, what: str, kept: str) -> InputError:
    """A clear message for an OSError while writing ``what`` (``kept``: what survived)."""
    if err.errno in DISK_FULL:
        return InputError(f"disk full while writing {what}; {kept}")
    reason = err.strerror or str(err)
    return InputError(f"cannot write {what}: {reason}; {kept}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, what: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is synced and renamed to
    ``path``, on failure removed (the previous ``path``, if any, stays as it was)."""
    path = Path(path)
    what = what or str(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # the suffix is kept: writers (matplotlib, anndata) read the format from it
        fd, name = tempfile.mkstemp(
            prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent
        )
        os.close(fd)
    except OSError as err:
        raise io_error(err, what, "nothing was written") from None
    tmp = Path(name)
    kept = "the previous file is intact" if path.exists() else "nothing was written"
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise io_error(err, what, kept) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None], *, what=None) -> None:
    """``write(tmp)`` to a temporary file, then rename it to ``path`` (see
    :func:`atomic_path`)."""
    with atomic_path(path, what=what) as tmp:
        write(tmp)


def _mark_h5ad(path: Path) -> None:
    import h5py

    with h5py.File(path, "r+") as f:
        f.attrs[MARK] = "written by rnadiff"


def write_h5ad(adata, path: str | os.PathLike) -> None:
    """``adata.write_h5ad(path)``, atomically, marked as rnadiff's."""

    def write(tmp: Path) -> None:
        adata.write_h5ad(tmp)
        _mark_h5ad(tmp)

    write_atomic(path, write, what=f"{path}")


def write_h5ad_chunks(path: str | os.PathLike, chunks, *, var, uns: dict | None = None) -> int:
    """Write an .h5ad whose cells come in ``chunks`` of ``(X, obs)`` (dense float32 X), so
    that memory stays flat in the number of cells; atomically (see :func:`atomic_path`).

    Returns the number of cells written. ``uns`` is written after the cells (it may be a dict
    that the chunks fill in as they go).
    """
    import h5py
    import pandas as pd
    from anndata.io import write_elem

    n_genes = len(var)
    with atomic_path(path, what=f"{path}") as tmp:
        obs_parts = []
        with h5py.File(tmp, "w") as f:
            f.attrs["encoding-type"], f.attrs["encoding-version"] = "anndata", "0.1.0"
            X = f.create_dataset(
                "X",
                shape=(0, n_genes),
                maxshape=(None, n_genes),
                dtype="float32",
                chunks=(max(1, min(4096, 2**20 // max(n_genes, 1))), n_genes),
            )
            X.attrs["encoding-type"], X.attrs["encoding-version"] = "array", "0.2.0"
            for x, obs in chunks:
                start = X.shape[0]
                X.resize(start + len(x), axis=0)
                X[start:] = x
                obs_parts.append(obs)
            obs = pd.concat(obs_parts) if obs_parts else pd.DataFrame()
            for col in obs.columns:  # as anndata writes them: text as categories
                if obs[col].dtype == object:
                    obs[col] = obs[col].astype("category")
            write_elem(f, "obs", obs)
            write_elem(f, "var", var)
            write_elem(f, "uns", dict(uns or {}))
            for key in ("layers", "obsm", "varm", "obsp", "varp"):
                write_elem(f, key, {})
            f.attrs[MARK] = "written by rnadiff"
        return len(obs)


def csv_header(frame, **kwargs) -> str:
    """The first line ``frame.to_csv(**kwargs)`` writes."""
    lines = frame.head(0).to_csv(**kwargs).splitlines()  # a DataFrame or a Series
    return lines[0] if lines else ""


def write_csv(frame, path: str | os.PathLike, *, what: str | None = None, **kwargs) -> None:
    """``frame.to_csv(path, **kwargs)``, atomically; ``what`` (an option's name): first
    refuse to replace a file that is not an earlier table of the same columns
    (:func:`check_file_replaceable`)."""
    if what is not None:
        check_file_replaceable(path, what, header=csv_header(frame, **kwargs))
    write_atomic(path, lambda tmp: frame.to_csv(tmp, **kwargs), what=f"{path}")


def write_text(text: str, path: str | os.PathLike) -> None:
    """``path.write_text(text)``, atomically."""
    write_atomic(path, lambda tmp: Path(tmp).write_text(text), what=f"{path}")


def save_figure(fig, path: str | os.PathLike, **kwargs) -> None:
    """``fig.savefig(path, **kwargs)``, atomically (the format from ``path``'s suffix); a
    PNG is marked as rnadiff's."""
    if Path(path).suffix.lower() == ".png":
        kwargs.setdefault("metadata", {"Software": f"{MARK} (matplotlib)"})
    write_atomic(path, lambda tmp: fig.savefig(tmp, **kwargs), what=f"{path}")


def check_replaceable(
    folder: str | os.PathLike, *, ours: Callable[[Path], Iterable[str] | None], what: str
) -> None:
    """Refuse to replace ``folder`` unless it is absent, empty, or one of ours.

    ``ours(folder)`` returns the names of the files rnadiff wrote there (``None``: not one of
    ours); a folder of ours that also holds other files is refused too, naming them.
    """
    folder = Path(folder)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise InputError(f"{what} {folder} is a file, not a folder; give a new folder name")
    entries = {p.name for p in folder.iterdir() if not p.name.startswith(".")}
    if not entries:
        return
    known = ours(folder)
    if known is None:
        raise InputError(
            f"{what} {folder} already holds files that are not an rnadiff model (e.g. "
            f"{sorted(entries)[:3]}); give a new or empty folder"
        )
    foreign = sorted(entries - set(known))
    if foreign:
        raise InputError(
            f"{what} {folder} is an rnadiff model but also holds other files ({foreign[:3]}); "
            "move them or give another folder"
        )


def check_creatable(folder: str | os.PathLike, what: str) -> None:
    """Fail early (before hours of work) if the folder ``folder`` cannot be created."""
    folder = Path(folder)
    for p in (folder, *folder.parents):
        if p.exists():
            if not p.is_dir():
                raise InputError(f"{what} {folder}: cannot create the folder: {p} is a file")
            if not os.access(p, os.W_OK):
                raise InputError(f"{what} {folder}: the folder {p} is not writable")
            return


def check_not_over(target: str | os.PathLike, inputs: Iterable[str | os.PathLike], what: str):
    """Refuse a folder ``target`` that is the current folder, or that holds (or is) one of
    the ``inputs`` files."""
    target = Path(target).resolve()
    if target == Path.cwd().resolve():
        raise InputError(f"{what} {target} is the current folder; give a new folder for the model")
    for f in inputs:
        f = Path(f).resolve()
        if f == target or target in f.parents:
            raise InputError(f"{what} {target} would hold the input file {f}; give another folder")
