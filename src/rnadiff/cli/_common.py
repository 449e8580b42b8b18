"""What every command shares: options, file reading and writing, and the wording of errors."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Annotated

import anndata as ad
import numpy as np
import typer

from rnadiff._errors import InputError

# ------------------------------------------------------------------ shared options
Seed = Annotated[int, typer.Option(help="Random seed; the same seed gives the same numbers.")]
NewDrugs = Annotated[
    Path | None,
    typer.Option(
        "--smiles",
        help="CSV of name,SMILES (header optional) for drugs the model never saw: they are "
        "embedded from their structure (a model trained with SMILES).",
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
Threads = Annotated[
    int | None,
    typer.Option(
        help="CPU threads for PyTorch (default: $OMP_NUM_THREADS, else the physical cores). "
        "Fewer threads than cores when other work shares the machine: oversubscribed threads "
        "run many times slower."
    ),
]
ModelDir = Annotated[Path, typer.Option("--model", help="Model folder written by 'rnadiff train'.")]
Sampler = Annotated[
    str,
    typer.Option(
        help="Sampler: dpmpp_2m (DPM-Solver++ 2M, one network call per step), heun (2nd order, "
        "two calls per step) or euler."
    ),
]
Steps = Annotated[int, typer.Option(help="Noise levels of the sampler (more: slower, finer).")]
GuidanceOpt = Annotated[
    str,
    typer.Option(
        help="Classifier-free guidance: one scale for the whole condition (1 = conditional, "
        "0 = unconditional, >1 = stronger; -20 to 50), or per covariate as KEY=W[,KEY=W], "
        "e.g. 'group_id=2'."
    ),
]
TransferOpt = Annotated[
    str,
    typer.Option(
        help="How a perturbation reaches a context (cell type, ...) where it was never measured "
        "(seen combinations always use the joint condition): compose (default: control in "
        "that context plus the perturbation's effect in the most similar context where it was "
        "measured, times a scale, see --transfer-scale; a pair A+B whose parts were measured "
        "in the cell's own context keeps their effects there and takes only its interaction "
        "from that context), guide (guidance on the perturbation, scale 3), or none."
    ),
]
TransferScale = Annotated[
    float | None,
    typer.Option(
        help="Strength of --transfer, the same for every cell (default: 3 for guide; for "
        "compose a scale from 1 to 1.5 that grows with the distance from the cell type (or "
        "other context) to the measured one the effect is taken from)."
    ),
]
GenePrior = Annotated[
    bool,
    typer.Option(
        "--gene-prior",
        help="Allow a perturbation never seen in training if its target is one of the model's "
        "genes: it is represented by the seen perturbations of the genes whose expression "
        "co-varies most with it, blended with the average of all seen perturbations as far "
        "as co-expression predicted the seen ones when each was left out (the mix is logged "
        "and stored in .uns).",
    ),
]
Calibrated = Annotated[
    bool,
    typer.Option(
        "--calibrated/--no-calibration",
        help="Scale each perturbation's effect (in contexts where it was measured) by the factor "
        "calibrated on the training cells after training; --no-calibration: the network's own.",
    ),
]
Layer = Annotated[
    str | None,
    typer.Option(
        help="Layer of the input .h5ad holding expression (default: the model's training "
        "layer when the file has it, else X)."
    ),
]
Where = Annotated[
    list[str] | None,
    typer.Option(
        help="KEY=VALUE: use only cells whose obs column KEY equals VALUE (repeatable, all hold)."
    ),
]

Backed = Annotated[
    bool | None,
    typer.Option(
        "--backed/--in-memory",
        help="Leave the expression matrix on disk and read it a block of cells at a time "
        "(default: when the file is larger than 2 GiB), or load it into memory.",
        show_default=False,
    ),
]
ChunkCells = Annotated[
    int,
    typer.Option(
        help="Cells produced and written at a time: larger outputs are written to the file "
        "chunk by chunk, so memory stays flat in the number of cells."
    ),
]
Device = Annotated[
    str,
    typer.Option(help="Where the network runs: auto (a CUDA GPU when there is one), cpu or cuda."),
]

# Python names in messages of the API -> the option that sets them here
_OPTIONS = {
    "input": "--input",
    "layer": "--layer",
    "use_raw": "--use-raw",
    "genes": "--genes",
    "n_top_genes": "--n-top-genes",
    "combination_sep": "--combination-sep",
    "prior": "--gene-prior",
    "sigma": "--sigma",
    "guidance": "--guidance",
    "transfer_scale": "--transfer-scale",
    "n_cells": "--n",
    "batch_size": "--batch-size",
    "steps": "--steps",
    "perturbation": "--perturbation",
    "max_epochs": "--max-epochs",
    "max_steps": "--max-steps",
    "min_steps": "--min-steps",
    "epochs": "--epochs",
    "checkpoint_every": "--checkpoint-every",
    "checkpoint_minutes": "--checkpoint-minutes",
    "calibration_cells": "--calibration-cells",
    "spread_cells": "--spread-cells",
    "anchor_cells": "--anchor-cells",
    "counts": "--counts",
    "anchor": "--anchor",
    "spread": "--spread",
    "n_models": "--n-models",
    "thinning": "--thinning",
    "lr": "--lr",
    "width": "--width",
    "depth": "--depth",
}


# Python calls named in messages of the API -> what does it here
_CALLS = {
    "model.add_molecules({name: smiles})": "--smiles FILE, a CSV of name,SMILES",
    "setup_anndata(smiles_key=... or smiles=...)": "rnadiff train --smiles-key or --smiles",
}


def cli_words(message: str) -> str:
    """A message of the API in the command line's words: ``input='log2'`` -> ``--input log2``;
    a Python call it names -> the option that does it here."""
    for call, option in _CALLS.items():
        message = message.replace(call, option)

    def option(match: re.Match) -> str:
        name, value = match.group(1), match.group(2) or match.group(3)
        flag = _OPTIONS.get(name)
        if flag is None:
            return match.group(0)
        if value in ("True", "False"):
            return flag if value == "True" else f"--no-{flag[2:]}"
        return f"{flag} {value.strip(chr(39))}"

    message = re.sub(r"\b(\w+)=('[^']*'|(\w[\w.]*|\.\.\.))", option, message)
    # "max_epochs must be ..." -> "--max-epochs must be ..."
    return re.sub(
        r"^(\w+)(?= must)", lambda m: _OPTIONS.get(m.group(1), m.group(1)), message, count=1
    )


def _threads(n: int | None) -> None:
    import torch

    if n is not None and n < 1:
        raise InputError(f"--threads must be at least 1, got {n}")
    torch.set_num_threads(n or default_threads())


def default_threads() -> int:
    """``$OMP_NUM_THREADS`` when set, else the machine's physical cores."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        text = Path("/proc/cpuinfo").read_text()
        cores = set(re.findall(r"physical id\s*:\s*(\d+)[\s\S]*?core id\s*:\s*(\d+)", text))
        if cores:
            return min(len(cores), len(os.sched_getaffinity(0)))
    except (OSError, AttributeError):
        pass
    return max(1, os.cpu_count() or 1)


# --------------------------------------------------------------------- file helpers
def _pairs(items: list[str] | None, what: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise InputError(f"{what} must look like KEY=VALUE, got {item!r}")
        key, value = (part.strip() for part in item.split("=", 1))
        if key in out:
            raise InputError(f"{what}: {key!r} is given twice; give each KEY once")
        out[key] = value
    return out


def _guidance(text: str) -> float | dict[str, float]:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return {k: float(v) for k, v in _pairs(text.split(","), "--guidance").items()}
    except ValueError as err:
        if isinstance(err, InputError):
            raise
        raise InputError(f"--guidance must be a number or KEY=W pairs, got {text!r}") from None


BACKED_BYTES = 2 * 2**30  # files larger than this are read from disk (backed), not loaded


def _read(path: Path, what: str = "input", backed: bool | None = False) -> ad.AnnData:
    """Read an .h5ad; ``backed``: leave X on disk (``None``: when the file is large)."""
    if path.is_dir():
        raise InputError(f"{path} is a directory, not an .h5ad file")
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    if backed is None:
        backed = path.stat().st_size > BACKED_BYTES
    from rnadiff.data._io import protect

    protect(path)  # never an output of this command
    try:
        with warnings.catch_warnings():  # rnadiff's own checks say it in one error line
            warnings.filterwarnings("ignore", r"(Observation|Variable) names are not unique")
            return ad.read_h5ad(path, backed="r" if backed else None)
    except Exception as err:  # h5py/anndata raise many types for a bad file
        raise InputError(f"cannot read {path} as .h5ad: {str(err).splitlines()[0]}") from None


def _matches(column, value: str, what: str) -> np.ndarray:
    """Cells whose ``column`` equals ``value``: as numbers when the column holds numbers."""
    import pandas as pd

    values = column.cat.categories if isinstance(column.dtype, pd.CategoricalDtype) else column
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if not numeric:
        return (column.astype(str) == value).to_numpy()
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"{what}: the column holds numbers, so the value must be one") from None
    return np.isclose(column.to_numpy(dtype=np.float64), number, rtol=1e-6, atol=0.0)


def _where_mask(adata: ad.AnnData, where: list[str] | None, option: str, path: Path):
    """Cells (a boolean mask) whose obs column KEY equals VALUE for every KEY=VALUE."""
    keep = np.ones(adata.n_obs, dtype=bool)
    for key, value in _pairs(where, option).items():
        if key not in adata.obs:
            raise InputError(f"{option}: column {key!r} not in {path}")
        keep &= _matches(adata.obs[key], value, f"{option} {key}={value}")
        if not keep.any():
            raise InputError(f"{option} {key}={value}: no cells of {path} left")
    if not keep.any():
        raise InputError(f"{path} has no cells")
    return keep


def _subset(adata: ad.AnnData, where: list[str] | None, option: str, path: Path) -> ad.AnnData:
    """Cells whose obs column KEY equals VALUE for every KEY=VALUE of ``where``."""
    for key, value in _pairs(where, option).items():
        if key not in adata.obs:
            raise InputError(f"{option}: column {key!r} not in {path}")
        adata = adata[_matches(adata.obs[key], value, f"{option} {key}={value}")]
        if adata.n_obs == 0:
            raise InputError(f"{option} {key}={value}: no cells of {path} left")
    return adata


def _cells(path: Path | None, where: list[str] | None, option: str) -> ad.AnnData | None:
    return None if path is None else _subset(_read(path), where, option, path)


def _check_out(path: Path, suffix: str = ".h5ad", option: str = "--out") -> None:
    """Refuse an output path early, before any work: a folder, the wrong kind of file, an
    input of the command, or a file rnadiff did not write (nothing of the user's is
    replaced; checked again when writing)."""
    from rnadiff.data._io import check_creatable, check_file_replaceable

    if path.is_dir():
        raise InputError(f"{option} {path} is a folder; give a file name ending in {suffix}")
    if path.suffix != suffix:
        raise InputError(f"{option} {path}: give a file name ending in {suffix}")
    check_creatable(path.parent, option)
    check_file_replaceable(path, option)


def _write(adata: ad.AnnData, path: Path, option: str = "--out") -> None:
    from rnadiff.data._io import write_h5ad

    _check_out(path, option=option)
    write_h5ad(adata, path)


def _csv(frame, path: Path, option: str = "--out", **kwargs) -> None:
    from rnadiff.data._io import write_csv

    write_csv(frame, path, what=option, **kwargs)


def _summary(adata: ad.AnnData, keys: list[str], path: Path, seconds: float) -> None:
    typer.echo(f"wrote {adata.n_obs} cells x {adata.n_vars} genes to {path} ({seconds:.1f} s)")
    keys = [k for k in keys if k in adata.obs]
    if keys:
        counts = adata.obs.groupby(keys, observed=True).size()
        typer.echo(counts.rename("cells").to_string())


def _load(model: Path, smiles: Path | None = None):
    """The model in ``model``, told the drugs of a ``--smiles`` table."""
    from rnadiff import RNADiffusion
    from rnadiff.data._molecules import read_smiles_table

    loaded = RNADiffusion.load(model)
    if smiles is not None:
        from rnadiff.data._io import protect

        protect(smiles)
        loaded.add_molecules(read_smiles_table(smiles))
    return loaded


def _genes(text: str | None) -> tuple[str, ...]:
    return tuple(g.strip() for g in (text or "").split(",") if g.strip())
