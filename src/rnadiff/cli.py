"""The ``rnadiff`` command line: parse, build configs, call the public API; no logic of its own."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import anndata as ad
import numpy as np
import typer

from rnadiff._errors import InputError, RNADiffError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="rnadiff: perturbation-aware diffusion models of single-cell gene expression.",
)

Seed = Annotated[int, typer.Option(help="Random seed; the same seed gives the same numbers.")]
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
        "0 = unconditional, >1 = stronger), or per covariate as KEY=W[,KEY=W], "
        "e.g. 'group_id=2'."
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
TransferOpt = Annotated[
    str,
    typer.Option(
        help="How a perturbation reaches a context (cell type, ...) where it was never measured "
        "(seen combinations always use the joint condition): compose (default: control in "
        "that context plus the perturbation's effect in the most similar context where it was "
        "measured, scale 1.5), "
        "guide (guidance on the perturbation, scale 3), or none."
    ),
]
GenePrior = Annotated[
    bool,
    typer.Option(
        "--gene-prior",
        help="Allow a perturbation never seen in training if its target is one of the model's "
        "genes: it is represented by the seen perturbations of the genes whose expression "
        "co-varies most with it, blended with the average of all seen perturbations as far "
        "as co-expression predicted the seen ones when each was left out in training (the mix "
        "is logged and stored in .uns).",
    ),
]
Calibrated = Annotated[
    bool,
    typer.Option(
        "--calibrated/--no-calibration",
        help="Scale each perturbation's effect (in contexts where it was measured) by the factor "
        "calibrated on the training cells after training (stored in the model; see "
        "RNADiffusion.calibrate_effects); --no-calibration: the network's own effect.",
    ),
]
TransferScale = Annotated[
    float | None,
    typer.Option(help="Strength of --transfer (default: 3 for guide, 1.5 for compose)."),
]


def _pairs(items: list[str] | None, what: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise InputError(f"{what} must look like KEY=VALUE, got {item!r}")
        key, value = (part.strip() for part in item.split("=", 1))
        if key in out:
            raise InputError(
                f"{what}: {key!r} is given twice ({key}={out[key]} and {key}={value}); "
                "give each KEY once"
            )
        out[key] = value
    return out


def _typed(pairs: dict, model, what: str) -> dict:
    """``pairs`` with the values of the model's continuous covariates (dose, time, ...) as
    numbers; other values stay text."""
    continuous = {c.key for c in model.registry.covariates if not c.categorical}
    out = dict(pairs)
    for key in continuous & set(out):
        out[key] = _number(
            out[key], f"{what} {key}={out[key]}: {key!r} is a continuous covariate, so the value"
        )
    return out


def _number(text: str, what: str) -> float:
    """``text`` as a number (the model's conversion), with an error that names the option."""
    from rnadiff.data._covariates import numeric_value

    try:
        return numeric_value(what, text)  # refuses text that is no number, "nan" included
    except InputError:
        raise InputError(f"{what} must be a number, got {text!r}") from None


def _guidance(text: str) -> float | dict[str, float]:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return {k: float(v) for k, v in _pairs(text.split(","), "--guidance").items()}
    except InputError:
        raise
    except ValueError:
        raise InputError(f"--guidance must be a number or KEY=W pairs, got {text!r}") from None


def _read(path: Path) -> ad.AnnData:
    if path.is_dir():
        raise InputError(f"{path} is a directory, not an .h5ad file")
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    try:
        return ad.read_h5ad(path)
    except Exception as err:  # h5py/anndata raise many types for a bad file
        raise InputError(f"cannot read {path} as .h5ad: {err}") from None


def _matches(column, value: str, what: str) -> np.ndarray:
    """Cells whose ``column`` equals ``value``: as numbers when the column holds numbers
    (``dose=0`` matches 0.0), else as text."""
    import pandas as pd

    values = column.cat.categories if isinstance(column.dtype, pd.CategoricalDtype) else column
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if not numeric:
        return (column.astype(str) == value).to_numpy()
    number = _number(value, f"{what}: the column holds numbers, so the value")
    return np.isclose(column.to_numpy(dtype=np.float64), number, rtol=1e-6, atol=0.0)


def _subset(adata: ad.AnnData, where: list[str] | None, option: str, path: Path) -> ad.AnnData:
    """Cells whose obs column KEY equals VALUE for every KEY=VALUE of ``where``."""
    for key, value in _pairs(where, option).items():
        if key not in adata.obs:
            raise InputError(f"{option}: column {key!r} not in {path}")
        adata = adata[_matches(adata.obs[key], value, f"{option} {key}={value}")]
        if adata.n_obs == 0:
            raise InputError(f"{option} {key}={value}: no cells of {path} left")
    return adata


def _conditions_csv(path: Path):
    """The conditions of a --conditions-csv file, one per row, as text (NaN for empty cells:
    unspecified)."""
    import pandas as pd

    if path.is_dir():
        raise InputError(f"--conditions-csv {path} is a directory, not a CSV file")
    if not path.is_file():
        raise InputError(f"--conditions-csv: file not found: {path}")
    try:
        frame = pd.read_csv(path, dtype=str)
    except pd.errors.EmptyDataError:
        raise InputError(
            f"--conditions-csv {path} is empty; give a header row of covariates "
            "and one condition per row"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as err:
        raise InputError(f"--conditions-csv: cannot read {path} as CSV: {err}") from None
    if len(frame) == 0:
        raise InputError(f"--conditions-csv {path} has a header but no conditions (rows)")
    unnamed = [c for c in frame.columns if str(c).startswith("Unnamed:")]
    if unnamed:
        raise InputError(f"--conditions-csv {path}: a column has no name in the header row")
    return frame  # the model turns continuous covariates' text into numbers


def _reference(path: Path | None, where: list[str] | None) -> ad.AnnData | None:
    """The --reference cells (restricted by --reference-where), if given."""
    return None if path is None else _subset(_read(path), where, "--reference-where", path)


def _folder(path: Path, what: str) -> None:
    """Create the folder ``path`` (and its parents), or say clearly why it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(
            f"{what}: cannot create the folder {path}: {err.strerror or err}"
        ) from None
    if not os.access(path, os.W_OK):
        raise InputError(f"{what}: the folder {path} is not writable")


def _check_folder(path: Path, what: str) -> None:
    """Fail early if the folder ``path`` cannot be created, leaving nothing behind."""
    missing = [p for p in (path, *path.parents) if not p.exists()]  # deepest first
    _folder(path, what)
    for p in missing:
        p.rmdir()


def _write(adata: ad.AnnData, path: Path) -> None:
    if path.is_dir():
        raise InputError(f"--out {path} is a directory; give an .h5ad file name")
    _folder(path.parent, "--out")
    adata.write_h5ad(path)


def _summary(adata: ad.AnnData, keys: list[str], path: Path, seconds: float) -> None:
    typer.echo(f"wrote {adata.n_obs} cells x {adata.n_vars} genes to {path} ({seconds:.1f} s)")
    keys = [k for k in keys if k in adata.obs]
    if keys:
        counts = adata.obs.groupby(keys, observed=True).size()
        typer.echo(counts.rename("cells").to_string())


# options of 'train' that still apply with --resume (the checkpoint keeps all the others)
_RESUME_OPTIONS = {
    "data",
    "out",
    "max_steps",
    "epochs",
    "min_steps",
    "max_epochs",
    "resume",
    "quiet",
}


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the option ``name`` was given on the command line (not left at its default)."""
    return getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"


@app.command()
def train(
    ctx: typer.Context,
    data: Annotated[
        Path, typer.Option(help="Training cells (.h5ad): raw counts or log-normalized.")
    ],
    out: Annotated[Path, typer.Option(help="Model folder (checkpoints are written here too).")],
    perturbation_key: Annotated[
        str | None, typer.Option(help="obs column of the perturbation; combinations written A+B.")
    ] = None,
    control: Annotated[
        str | None, typer.Option(help="Value of the perturbation column that marks control cells.")
    ] = None,
    cell_type_key: Annotated[str | None, typer.Option(help="obs column of the cell type.")] = None,
    batch_key: Annotated[str | None, typer.Option(help="obs column of the batch.")] = None,
    categorical: Annotated[
        list[str] | None, typer.Option(help="Other categorical obs columns (repeatable).")
    ] = None,
    dose_key: Annotated[
        str | None, typer.Option(help="obs column of the dose (log1p-transformed).")
    ] = None,
    time_key: Annotated[str | None, typer.Option(help="obs column of the time.")] = None,
    continuous: Annotated[
        list[str] | None, typer.Option(help="Other continuous obs columns (repeatable).")
    ] = None,
    layer: Annotated[
        str | None, typer.Option(help="Layer holding expression instead of X.")
    ] = None,
    input: Annotated[
        str,
        typer.Option(
            help="What X (or the --layer, when given) holds: auto (detect and say), counts, "
            "or lognorm."
        ),
    ] = "auto",
    n_top_genes: Annotated[
        int, typer.Option(help="Highly variable genes kept (0: all genes).")
    ] = 2000,
    max_steps: Annotated[
        int | None,
        typer.Option(
            help="Optimizer steps in total (a resumed run continues up to this); with "
            "--epochs or --min-steps, the most steps. Default: 12 passes over the training "
            "cells, at least 800 and at most 4000 steps (800 on a Kang fold of 1400 cells, "
            "1207 on Papalexi's 12900)."
        ),
    ] = None,
    epochs: Annotated[
        float | None,
        typer.Option(
            help="Passes over the training cells a run aims for (default 12), kept between "
            "--min-steps and --max-steps (default 4000)."
        ),
    ] = None,
    min_steps: Annotated[
        int | None,
        typer.Option(
            help="Optimizer steps at least when the length follows --epochs (default 800), "
            "unless --max-epochs comes first."
        ),
    ] = None,
    max_epochs: Annotated[
        float,
        typer.Option(
            help="Passes over the training cells at most (0: no cap): training stops at "
            "whichever of the steps and this comes first. Tiny data sets (a few hundred "
            "cells) overfit with many passes; see the README."
        ),
    ] = 200.0,
    batch_size: Annotated[int, typer.Option(help="Cells per minibatch.")] = 128,
    lr: Annotated[
        float, typer.Option(help="Peak learning rate (AdamW, warm-up then cosine).")
    ] = 2e-3,
    checkpoint_every: Annotated[
        int, typer.Option(help="Steps between checkpoints in --out.")
    ] = 1000,
    width: Annotated[int, typer.Option(help="Hidden width of the denoiser network.")] = 128,
    depth: Annotated[int, typer.Option(help="Residual blocks of the denoiser network.")] = 3,
    calibration_cells: Annotated[
        int,
        typer.Option(
            help="Training control cells from which each perturbation's effect size is "
            "calibrated after training (0: no calibration)."
        ),
    ] = 128,
    spread_cells: Annotated[
        int,
        typer.Option(
            help="Training cells per pair of measured conditions (e.g. a cell type's control "
            "and stimulated cells) from which the spread lost by counterfactual cells is "
            "calibrated after training (0: no spread calibration; see "
            "RNADiffusion.calibrate_spread)."
        ),
    ] = 256,
    thinning: Annotated[
        float,
        typer.Option(
            help="Share of each training batch corrupted by thinning the cells' counts (a "
            "shallower copy of each cell) instead of Gaussian noise; 0.5 for a model meant for "
            "'rnadiff denoise' (raw counts only; see the README)."
        ),
    ] = 0.0,
    p_mean: Annotated[
        float,
        typer.Option(
            help="Mean of ln(sigma) of the training noise levels (EDM's -1.2). Higher values "
            "train more at high noise, where covariate effects are learned: 1-2 for data with "
            "many weak perturbations (see the README)."
        ),
    ] = -1.2,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue training from the checkpoint in --out, with the checkpoint's model "
            "and training settings: only --max-steps, --epochs, --min-steps and --max-epochs "
            "(when given) apply, other options are ignored.",
        ),
    ] = False,
    seed: Seed = 0,
    quiet: Quiet = False,
) -> None:
    """Train a conditional diffusion model on an .h5ad file and save it to a folder."""
    from rnadiff import (
        DiffusionConfig,
        ModelConfig,
        NetworkConfig,
        PreprocessConfig,
        RNADiffusion,
        TrainConfig,
    )

    if max_epochs < 0:
        raise InputError(f"--max-epochs must be >= 0 (0: no cap), got {max_epochs:g}")
    cap = None if max_epochs == 0 else max_epochs
    _check_folder(out, "--out")
    # the length: --max-steps alone trains exactly that many steps; --epochs / --min-steps
    # follow the data (between --min-steps and --max-steps)
    length: dict = {}
    if epochs is not None or min_steps is not None:
        length = {"epochs": 12.0 if epochs is None else epochs}
        length |= {} if min_steps is None else {"min_steps": min_steps}
        length |= {} if max_steps is None else {"max_steps": max_steps}
    elif max_steps is not None:
        length = {"max_steps": max_steps, "epochs": None}
    train_cfg = TrainConfig(
        **length,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        checkpoint_every=checkpoint_every,
        calibration_cells=calibration_cells,
        spread_cells=spread_cells,
        thinning=thinning,
        max_epochs=cap,
    )
    adata = _read(data)
    t0 = time.perf_counter()
    if resume:
        ignored = [
            "--" + p.name.replace("_", "-")
            for p in ctx.command.params
            if p.name not in _RESUME_OPTIONS and _given(ctx, p.name)
        ]
        model = RNADiffusion.load(out, adata=adata)
        typer.echo(f"resuming from step {model.step} of {out}")
        typer.echo(
            "note: --resume keeps the checkpoint's model and training settings; only "
            "--max-steps, --epochs, --min-steps and --max-epochs (when given) apply"
            + (f"; ignored: {', '.join(ignored)}" if ignored else ""),
            err=True,
        )
        kept = (model.train_config or train_cfg).to_dict() | length
        if _given(ctx, "max_epochs"):
            kept["max_epochs"] = cap
        model.train(config=TrainConfig(**kept), checkpoint_dir=out, progress=not quiet)
    else:
        RNADiffusion.setup_anndata(
            adata,
            perturbation_key=perturbation_key,
            control=control,
            cell_type_key=cell_type_key,
            batch_key=batch_key,
            categorical_keys=categorical or [],
            dose_key=dose_key,
            time_key=time_key,
            continuous_keys=continuous or [],
            layer=layer,
        )
        config = ModelConfig(
            preprocess=PreprocessConfig(input=input, n_top_genes=n_top_genes or None),
            network=NetworkConfig(width=width, depth=depth),
            diffusion=DiffusionConfig(p_mean=p_mean),
        )
        model = RNADiffusion(adata, config=config, seed=seed)
        model.train(config=train_cfg, checkpoint_dir=out, progress=not quiet)
    model.save(out)
    last = model.history[-1]["loss"] if model.history else float("nan")
    typer.echo(
        f"{model!r}\nfinal loss {last:.4f}; saved to {out} ({time.perf_counter() - t0:.0f} s)"
    )


@app.command()
def generate(
    model: Annotated[Path, typer.Option(help="Model folder written by 'rnadiff train'.")],
    out: Annotated[Path, typer.Option(help="Output .h5ad of generated cells.")],
    condition: Annotated[
        list[str] | None,
        typer.Option(
            help="KEY=VALUE of one condition (repeatable: all form one condition); covariates left out are unspecified."
        ),
    ] = None,
    conditions_csv: Annotated[
        Path | None,
        typer.Option(
            help="CSV with one condition per row and covariates as columns (instead of --condition)."
        ),
    ] = None,
    n: Annotated[int, typer.Option(help="Cells per condition.")] = 100,
    sampler: Sampler = "dpmpp_2m",
    steps: Steps = 20,
    guidance: GuidanceOpt = "1",
    transfer: TransferOpt = "compose",
    transfer_scale: TransferScale = None,
    gene_prior: GenePrior = False,
    calibrated: Calibrated = True,
    seed: Seed = 0,
    quiet: Quiet = False,
) -> None:
    """Generate cells under given conditions (log-normalized expression; conditions in .obs)."""
    from rnadiff import RNADiffusion

    if conditions_csv is not None and condition:
        raise InputError("give either --condition or --conditions-csv, not both")
    csv = _conditions_csv(conditions_csv) if conditions_csv is not None else None
    conds = _pairs(condition, "--condition")
    m = RNADiffusion.load(model)
    conds = csv if csv is not None else _typed(conds, m, "--condition")
    t0 = time.perf_counter()
    cells = m.generate(
        conds,
        n_cells=n,
        sampler=sampler,
        steps=steps,
        guidance=_guidance(guidance),
        transfer=transfer,
        transfer_scale=transfer_scale,
        prior=gene_prior,
        calibrated=calibrated,
        seed=seed,
        progress=not quiet,
    )
    _write(cells, out)
    _summary(cells, m.registry.keys, out, time.perf_counter() - t0)


@app.command()
def predict(
    model: Annotated[Path, typer.Option(help="Model folder written by 'rnadiff train'.")],
    source: Annotated[
        Path,
        typer.Option(help="Source cells (.h5ad) with the model's genes and covariate columns."),
    ],
    out: Annotated[Path, typer.Option(help="Output .h5ad of predicted cells.")],
    perturbation: Annotated[
        list[str] | None,
        typer.Option(
            help="Target perturbation (e.g. 'stim' or 'A+B'). Repeatable, or 'all' (every "
            "perturbation of the model but the control): the source cells are predicted under "
            "each, into one file (cell names get '-<perturbation>'), e.g. a whole screen for "
            "'rnadiff evaluate --by'."
        ),
    ] = None,
    set: Annotated[
        list[str] | None,
        typer.Option("--set", help="KEY=VALUE: other covariates to change (repeatable)."),
    ] = None,
    where: Annotated[
        list[str] | None,
        typer.Option(
            help="KEY=VALUE: use only source cells whose obs column KEY equals VALUE (repeatable, all must hold)."
        ),
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            help="counterfactual (encode each cell, decode under the target) or generate (new cells under each cell's target condition)."
        ),
    ] = "counterfactual",
    encode_sigma: Annotated[
        float | None,
        typer.Option(
            help="Counterfactual: noise level cells are encoded to (default: the maximum; lower keeps more of the cell)."
        ),
    ] = None,
    sampler: Sampler = "dpmpp_2m",
    steps: Steps = 20,
    guidance: GuidanceOpt = "1",
    transfer: TransferOpt = "compose",
    transfer_scale: TransferScale = None,
    gene_prior: GenePrior = False,
    calibrated: Calibrated = True,
    spread: Annotated[
        bool,
        typer.Option(
            "--spread/--no-spread",
            help="Counterfactual: widen each target condition's predicted cells around their "
            "mean by the model's spread_scale, the spread that encoding and decoding lose as "
            "measured on the training cells after training (every gene's mean is kept); "
            "--no-spread: the cells as decoded.",
        ),
    ] = True,
    seed: Seed = 0,
    quiet: Quiet = False,
) -> None:
    """Predict source cells under a target perturbation (counterfactual or generation)."""
    from rnadiff import RNADiffusion

    target = _pairs(set, "--set")
    m = RNADiffusion.load(model)
    target = _typed(target, m, "--set")
    src = _read(source)
    src = _subset(src, where, "--where", source)
    perturbations = _perturbations(perturbation, m)
    from tqdm.auto import tqdm

    guide = _guidance(guidance)
    t0 = time.perf_counter()
    preds = [
        m.predict(
            src,
            perturbation=p,
            target=target,
            method=method,
            sampler=sampler,
            steps=steps,
            guidance=guide,
            transfer=transfer,
            transfer_scale=transfer_scale,
            encode_sigma=encode_sigma,
            prior=gene_prior,
            calibrated=calibrated,
            spread=spread,
            seed=seed,
            progress=not quiet and len(perturbations) == 1,
        )
        for p in tqdm(perturbations, disable=quiet or len(perturbations) == 1, desc="perturbations")
    ]
    pred = preds[0] if len(preds) == 1 else _stack_predictions(preds, perturbations)
    _write(pred, out)
    _summary(pred, m.registry.keys, out, time.perf_counter() - t0)


def _perturbations(given: list[str] | None, model) -> list[str | None]:
    """The --perturbation values; 'all': every perturbation of the model but the control."""
    if not given:
        return [None]
    if "all" in given:
        if len(given) > 1:
            raise InputError("--perturbation all stands alone; do not list others with it")
        reg = model.registry
        if reg.perturbation_key is None:
            raise InputError("--perturbation all: the model has no perturbation covariate")
        names = [t for t in reg[reg.perturbation_key].tokens if t != reg.control]
        if not names:
            raise InputError("--perturbation all: the model knows no perturbation but the control")
        return names
    if len(set(given)) < len(given):
        raise InputError(f"--perturbation: a value is given twice: {given}")
    return list(given)


def _stack_predictions(preds: list, perturbations: list) -> ad.AnnData:
    """One AnnData of the predictions under several perturbations: cell names get
    ``-<perturbation>``; ``uns['rnadiff']`` keeps what all share and, under ``predictions``,
    each perturbation's own record."""
    names = [str(p) for p in perturbations]
    out = ad.concat(preds, keys=names, index_unique="-", merge="same")
    infos = [dict(q.uns["rnadiff"]) for q in preds]
    shared = {k: v for k, v in infos[0].items() if all(repr(i.get(k)) == repr(v) for i in infos)}
    out.uns["rnadiff"] = {**shared, "predictions": dict(zip(names, infos, strict=True))}
    return out


@app.command()
def denoise(
    model: Annotated[Path, typer.Option(help="Model folder written by 'rnadiff train'.")],
    data: Annotated[
        Path,
        typer.Option(
            help="Cells to denoise (.h5ad): raw counts or log-normalized, as the training data, with the model's genes; registered covariate columns in obs are used where present."
        ),
    ],
    out: Annotated[
        Path, typer.Option(help="Output .h5ad of denoised cells (log-normalized, same obs).")
    ],
    sigma: Annotated[
        str,
        typer.Option(
            help="Noise level the cells are taken to carry, in per-gene training standard deviations (larger pulls harder towards the training cells), or 'auto': each cell's counting noise beyond the training cells', from its total counts (raw counts only)."
        ),
    ] = "auto",
    layer: Annotated[
        str | None,
        typer.Option(help="Layer of the data holding the expression (default: the training one)."),
    ] = None,
    where: Annotated[
        list[str] | None,
        typer.Option(
            help="KEY=VALUE: denoise only cells whose obs column KEY equals VALUE (repeatable, all must hold)."
        ),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Denoise cells with the model (the posterior mean of each clean profile)."""
    from rnadiff import RNADiffusion

    m = RNADiffusion.load(model)
    cells = _subset(_read(data), where, "--where", data)
    t0 = time.perf_counter()
    result = m.denoise(cells, sigma=_sigma(sigma), layer=layer, progress=not quiet)
    _write(result, out)
    _summary(result, m.registry.keys, out, time.perf_counter() - t0)


def _sigma(text: str) -> float | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise InputError(f"--sigma must be a positive number or 'auto', got {text!r}") from None


def _genes(text: str | None) -> tuple[str, ...]:
    return tuple(g.strip() for g in (text or "").split(",") if g.strip())


def _markers(up, down, min_lfc, percentile):
    from rnadiff.design import Markers

    if not _genes(up) and not _genes(down):
        raise InputError("give marker genes with --up and/or --down (comma-separated)")
    return Markers(up=_genes(up), down=_genes(down), min_lfc=min_lfc, percentile=percentile)


Up = Annotated[
    str | None, typer.Option(help="Genes that must go up, comma-separated (e.g. ISG15,IFIT1).")
]
Down = Annotated[str | None, typer.Option(help="Genes that must go down, comma-separated.")]
MinLfc = Annotated[
    float,
    typer.Option(
        help="Required log2 fold change of (1 + expression) vs the reference mean, per marker."
    ),
]
Percentile = Annotated[
    float | None,
    typer.Option(
        help="Instead of --min-lfc: up genes above this percentile of the reference cells, "
        "down genes below 100 minus it."
    ),
]
Reference = Annotated[
    Path | None,
    typer.Option(
        help="Reference cells (.h5ad), e.g. controls in the context: markers are relative to "
        "them and 'rank' measures the target's change from them and decodes them under every "
        "candidate (default: cells the model generates without phenotype guidance)."
    ),
]
ReferenceWhere = Annotated[
    list[str] | None,
    typer.Option(help="KEY=VALUE: use only reference cells whose obs column KEY equals VALUE."),
]


@app.command()
def design(
    model: Annotated[Path, typer.Option(help="Model folder written by 'rnadiff train'.")],
    out: Annotated[Path, typer.Option(help="Output .h5ad of designed cells.")],
    up: Up = None,
    down: Down = None,
    min_lfc: MinLfc = 1.0,
    percentile: Percentile = None,
    condition: Annotated[
        list[str] | None,
        typer.Option(
            help="KEY=VALUE covariates to condition on (repeatable), e.g. cell_type=B; "
            "left out: unconditional in that covariate."
        ),
    ] = None,
    n: Annotated[int, typer.Option(help="Cells to design per condition.")] = 100,
    scale: Annotated[
        float,
        typer.Option(
            help="Guidance step: 1 moves each denoised estimate onto the specification, "
            "smaller goes part of the way, 0 is unguided."
        ),
    ] = 1.0,
    through_denoiser: Annotated[
        bool,
        typer.Option(
            help="Differentiate through the network (diffusion posterior sampling): slower, "
            "closer to the data manifold."
        ),
    ] = False,
    langevin_steps: Annotated[
        int, typer.Option(help="Langevin corrector steps after each sampler step (0: none).")
    ] = 0,
    reference: Reference = None,
    reference_where: ReferenceWhere = None,
    realism_reference: Annotated[
        Path | None,
        typer.Option(
            help="Real cells (.h5ad) the realism score compares with (needed: a saved model "
            "does not keep its training cells)."
        ),
    ] = None,
    guidance: GuidanceOpt = "1",
    steps: Steps = 20,
    plot: Annotated[
        Path | None, typer.Option(help="PNG of distance to the specification vs realism.")
    ] = None,
    seed: Seed = 0,
    quiet: Quiet = False,
) -> None:
    """Design cells whose marker genes meet a specification, and say how realistic they are."""
    from rnadiff import RNADiffusion

    spec = _markers(up, down, min_lfc, percentile)
    conditions = _pairs(condition, "--condition")
    m = RNADiffusion.load(model)
    conditions = _typed(conditions, m, "--condition")
    ref = _reference(reference, reference_where)
    real = _read(realism_reference) if realism_reference is not None else None
    t0 = time.perf_counter()
    cells = m.design(
        spec,
        conditions=conditions or None,
        n_cells=n,
        scale=scale,
        through_denoiser=through_denoiser,
        langevin_steps=langevin_steps,
        guidance=_guidance(guidance),
        steps=steps,
        reference=ref,
        realism_reference=real,
        seed=seed,
        progress=not quiet,
    )
    _write(cells, out)
    info = cells.uns["rnadiff"]["design"]
    typer.echo(
        f"wrote {cells.n_obs} designed cells to {out} ({time.perf_counter() - t0:.1f} s)\n"
        f"specification: {info['phenotype']}\n"
        f"meet it: {info['success_rate']:.1%} (unguided cells from the same noise: "
        f"{info['unguided_success_rate']:.1%})\n"
        f"realism, median (1 = as close to real cells as real cells are to each other): "
        f"{info['realism_median']:.2f}"
        + (
            f" (unguided: {info['unguided_realism_median']:.2f})"
            if "unguided_realism_median" in info
            else " (no real cells: pass --realism-reference)"
        )
    )
    if plot is not None:
        from rnadiff.evaluation._plots import plot_design

        plot_design(cells, plot, title=info["phenotype"][:80])
        typer.echo(f"plot: {plot}")


@app.command()
def rank(
    model: Annotated[Path, typer.Option(help="Model folder written by 'rnadiff train'.")],
    target: Annotated[
        Path | None,
        typer.Option(help="Target cells (.h5ad) to explain (instead of --up/--down)."),
    ] = None,
    target_where: Annotated[
        list[str] | None,
        typer.Option(help="KEY=VALUE: use only target cells whose obs column KEY equals VALUE."),
    ] = None,
    up: Up = None,
    down: Down = None,
    min_lfc: MinLfc = 1.0,
    percentile: Percentile = None,
    context: Annotated[
        list[str] | None,
        typer.Option(help="KEY=VALUE covariates every candidate is placed in (repeatable)."),
    ] = None,
    candidates: Annotated[
        str | None,
        typer.Option(help="Perturbations to rank, comma-separated (default: all the model knows)."),
    ] = None,
    pairs: Annotated[
        bool, typer.Option(help="Also rank every pair A+B of the candidates.")
    ] = False,
    reference: Reference = None,
    reference_where: ReferenceWhere = None,
    n: Annotated[
        int,
        typer.Option(
            help="Cells per candidate for the generation score: up to N --reference cells "
            "decoded under every candidate (the same cells for all), else N generated ones."
        ),
    ] = 200,
    out: Annotated[Path | None, typer.Option(help="Write the full ranking as CSV.")] = None,
    plot: Annotated[Path | None, typer.Option(help="PNG bar chart of the best candidates.")] = None,
    top: Annotated[int, typer.Option(help="Candidates printed and plotted (0: all).")] = 10,
    seed: Seed = 0,
    quiet: Quiet = False,
) -> None:
    """Rank candidate perturbations by how well they would produce a target phenotype."""
    from rnadiff import RNADiffusion

    markers = bool(_genes(up) or _genes(down))
    if target is None and not markers:
        raise InputError(
            "give either --target cells or marker genes (--up/--down): one of them is required"
        )
    if target is not None and markers:
        raise InputError("give either --target cells or marker genes (--up/--down), not both")
    if top < 0:
        raise InputError(f"--top must be >= 0 (0: all candidates), got {top}")
    if n < 1:
        raise InputError(f"--n must be at least 1, got {n}")
    context_pairs = _pairs(context, "--context")
    m = RNADiffusion.load(model)
    context_pairs = _typed(context_pairs, m, "--context")
    if target is not None:
        goal = _subset(_read(target), target_where, "--target-where", target)
    else:
        goal = _markers(up, down, min_lfc, percentile)
    ref = _reference(reference, reference_where)
    t0 = time.perf_counter()
    ranked = m.rank_perturbations(
        goal,
        candidates=_genes(candidates) or None,
        context=context_pairs,
        pairs=pairs,
        reference=ref,
        n_cells=n,
        seed=seed,
        progress=not quiet,
    )
    cols = [
        c
        for c in ("rank", "perturbation", "likelihood_score", "phenotype_score", "success_rate")
        if c in ranked
    ]
    typer.echo(
        f"ranked {len(ranked)} candidates ({time.perf_counter() - t0:.1f} s); rank = mean of "
        "the likelihood and generation ranks"
    )
    top = top or len(ranked)
    typer.echo(ranked[cols].head(top).to_string(index=False, float_format="{:.4f}".format))
    if out is not None:
        _folder(out.parent, "--out")
        ranked.to_csv(out, index=False)
        typer.echo(f"wrote {out}")
    if plot is not None:
        from rnadiff.evaluation._plots import plot_ranking

        plot_ranking(ranked, plot, top=top)
        typer.echo(f"plot: {plot}")


@app.command()
def evaluate(
    pred: Annotated[
        Path, typer.Option(help="Predicted cells (.h5ad, log-normalized); its genes are scored.")
    ],
    real: Annotated[
        Path,
        typer.Option(
            help="Real cells (.h5ad, counts or log-normalized) holding the perturbed population."
        ),
    ],
    control: Annotated[
        Path | None,
        typer.Option(
            help="Real control cells (.h5ad); default: the --real file (select them with --control-where)."
        ),
    ] = None,
    real_where: Annotated[
        list[str] | None,
        typer.Option(
            help="KEY=VALUE: real perturbed cells are those whose obs column KEY equals VALUE (repeatable)."
        ),
    ] = None,
    control_where: Annotated[
        list[str] | None,
        typer.Option(
            help="KEY=VALUE: real control cells are those whose obs column KEY equals VALUE (repeatable)."
        ),
    ] = None,
    by: Annotated[
        str | None,
        typer.Option(
            help="obs column naming each cell's condition (e.g. the perturbation) in the "
            "predicted and real cells: score every predicted condition against the real cells "
            "of the same label, and add the discrimination score (is each prediction closest "
            "to its own real condition among all real ones? 1 = always; 'discrimination' "
            "leaves each condition's own target genes out, as cell-eval does: the parts of "
            "a label A+B that are genes)."
        ),
    ] = None,
    control_label: Annotated[
        str | None,
        typer.Option(
            help="With --by: the label of control cells in that column (e.g. non-targeting); "
            "its cells are no condition, so --real can be the whole data set. Default: the "
            "control cells' label when they all share one."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Also write the metrics to this CSV (with --by: one row per condition)."),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            help="With --by: a PNG of each condition's Pearson delta (top-100 DE genes), R² of "
            "the top-100 DE genes' means and discrimination score."
        ),
    ] = None,
    seed: Seed = 0,
) -> None:
    """Score predicted cells against real ones: R² of means, Pearson delta, E-distance, MMD, ..."""
    from rnadiff.evaluation._score import score, score_conditions

    predicted = _read(pred)
    real_cells = _subset(_read(real), real_where, "--real-where", real)
    control_file = control or real
    control_cells = _subset(_read(control_file), control_where, "--control-where", control_file)
    for option, value in (("--control-label", control_label), ("--plot", plot)):
        if value is not None and by is None:
            raise InputError(f"{option} needs --by (per-condition scores)")
    if by is not None:
        table = score_conditions(
            predicted, real_cells, control_cells, by=by, seed=seed, control_label=control_label
        )
        typer.echo(
            f"{len(table)} predicted conditions of {by!r} ({predicted.n_obs} cells) vs "
            f"{real_cells.n_obs} real cells ({control_cells.n_obs} control) on "
            f"{predicted.n_vars} genes"
        )
        shown = ["n_pred", "n_real", "pearson_delta_top100", "r2_mean_top100", "edistance"]
        shown += [c for c in ("discrimination", "discrimination_all_genes") if c in table]
        typer.echo(table[shown].to_string(float_format=lambda v: f"{v:.4f}"))
        means = table.drop(columns=["n_pred", "n_real"]).mean()
        typer.echo("\nmean over conditions:")
        typer.echo(means.to_string(float_format=lambda v: f"{v:.4f}"))
        if out is not None:
            _folder(out.parent, "--out")
            table.to_csv(out)
        if plot is not None:
            from rnadiff.evaluation._plots import plot_conditions

            _folder(plot.parent, "--plot")
            plot_conditions(table, plot, title=f"{pred.name}: scores per {by}")
            typer.echo(f"plot: {plot}")
        return
    metrics = score(predicted, real_cells, control_cells, seed=seed)
    typer.echo(
        f"{predicted.n_obs} predicted vs {real_cells.n_obs} real cells "
        f"({control_cells.n_obs} control) on {predicted.n_vars} genes"
    )
    typer.echo(metrics.to_string(float_format=lambda v: f"{v:.4f}"))
    if out is not None:
        _folder(out.parent, "--out")
        metrics.rename_axis("metric").to_csv(out)


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option(help="Output folder: model, predictions, metrics.csv, mean_change.png.")
    ] = Path("demo_output"),
    holdout: Annotated[
        str, typer.Option(help="Cell type whose stimulated cells are held out.")
    ] = "CD14+ Monocytes",
    max_steps: Annotated[
        int | None,
        typer.Option(help="Training steps (default: 12 passes over the cells, at least 800)."),
    ] = None,
    steps: Steps = 20,
    guidance: GuidanceOpt = "1",
    transfer: TransferOpt = "compose",
    transfer_scale: TransferScale = None,
    data: Annotated[
        Path | None,
        typer.Option(help="Kang 2018 .h5ad (default: the dataset registry, RNADIFF_DATA_DIR)."),
    ] = None,
    seed: Seed = 0,
    quiet: Quiet = False,
) -> None:
    """Kang 2018 IFN-beta: hold out one cell type's stimulated cells, train, predict, score."""
    from rnadiff.evaluation._demo import format_table, run_demo

    if data is not None and data.is_dir():
        raise InputError(f"--data {data} is a directory; give the Kang 2018 .h5ad file itself")
    if data is not None and not data.is_file():
        raise InputError(f"--data: file not found: {data}")
    t0 = time.perf_counter()
    table = run_demo(
        out,
        holdout=holdout,
        max_steps=max_steps,
        steps=steps,
        guidance=_guidance(guidance),
        transfer=transfer,
        transfer_scale=transfer_scale,
        seed=seed,
        data_path=data,
        progress=not quiet,
    )
    a = table.attrs
    typer.echo(
        f"\nKang 2018, held-out stimulated '{holdout}' ({a['n_real']} real cells), "
        f"trained on {a['train_cells']} cells x {a['genes']} genes for {a['train_steps']} steps "
        f"({a['train_s']:.0f} s)\n"
    )
    typer.echo(format_table(table))
    typer.echo(
        f"\nwrote {out}/metrics.csv, {out}/mean_change.png, predictions and the model "
        f"({time.perf_counter() - t0:.0f} s in all)"
    )


def main() -> None:
    """Console entry point: user errors become one clear line and exit code 2."""
    try:
        app()
    except RNADiffError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
