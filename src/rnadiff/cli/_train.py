"""``rnadiff train``: fit a model on an .h5ad file, or resume one."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated

import typer

from rnadiff._errors import InputError
from rnadiff.cli._common import Backed, Device, Quiet, Seed, Threads, _genes, _read, _threads

# options of 'train' that still apply with --resume (the checkpoint keeps all the others)
_RESUME_OPTIONS = {
    "backed",
    "device",
    "compile",
    "data",
    "out",
    "max_steps",
    "epochs",
    "min_steps",
    "max_epochs",
    "min_epochs",
    "resume",
    "quiet",
    "threads",
}


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the option ``name`` was given on the command line (not left at its default)."""
    return getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"


def _gene_list(text: str | None) -> tuple[str, ...] | None:
    """``--genes``: a file with one gene per line, or genes separated by commas."""
    if text is None:
        return None
    path = Path(text)
    if path.is_file():
        genes = tuple(g.strip() for g in path.read_text().splitlines() if g.strip())
    else:
        genes = _genes(text)
    if not genes:
        raise InputError(f"--genes {text!r} names no gene")
    return genes


def _embedding_table(path: Path):
    """``--gene-embeddings``: a CSV / TSV file, genes in the first column, numbers after."""
    import pandas as pd

    if not path.is_file():
        raise InputError(f"--gene-embeddings: file not found: {path}")
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab", ".txt") else ","
    try:
        frame = pd.read_csv(path, sep=sep, index_col=0)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(f"--gene-embeddings {path} is not a readable table: {err}") from None
    frame.index = frame.index.astype(str)
    return frame


def train(
    ctx: typer.Context,
    data: Annotated[
        Path, typer.Option(help="Training cells (.h5ad): raw counts or log-normalized.")
    ],
    out: Annotated[
        Path,
        typer.Option(
            help="Model folder (checkpoints go here during training). It must be new, empty or "
            "an rnadiff model; never the current folder or the folder of --data."
        ),
    ],
    perturbation_key: Annotated[
        str | None, typer.Option(help="obs column of the perturbation; combinations written A+B.")
    ] = None,
    control: Annotated[
        str | None, typer.Option(help="Value of the perturbation column that marks control cells.")
    ] = None,
    combination_sep: Annotated[
        str,
        typer.Option(
            help="Separator of combined perturbations in the perturbation column ('' : none, "
            "when the separator belongs to the names). Other columns are never split."
        ),
    ] = "+",
    cell_type_key: Annotated[str | None, typer.Option(help="obs column of the cell type.")] = None,
    batch_key: Annotated[str | None, typer.Option(help="obs column of the batch.")] = None,
    categorical: Annotated[
        list[str] | None, typer.Option(help="Other categorical obs columns (repeatable).")
    ] = None,
    dose_key: Annotated[
        str | None,
        typer.Option(
            help="obs column of the dose (0: vehicle, the control). With --perturbation-key "
            "the dose scales each perturbation's effect along a learned Hill curve in log dose "
            "(--dose-response)."
        ),
    ] = None,
    dose_response: Annotated[
        str,
        typer.Option(
            help="How a dosed perturbation's embedding follows its dose: hill (a learned "
            "sigmoid in log dose per perturbation, 0 at dose 0; any dose can be asked for), "
            "hill+embedding (also a Fourier embedding of the dose), embedding (the dose as a "
            "covariate of its own, interpolated between measured values)."
        ),
    ] = "hill",
    dose_unknown: Annotated[
        str,
        typer.Option(
            help="A dosed perturbation whose dose is unknown (dropped in training for "
            "classifier-free guidance, or not given when predicting): full (its full effect, "
            "the top of its Hill curve) or learned (a level learned per perturbation: its "
            "effect over its measured doses)."
        ),
    ] = "full",
    smiles_key: Annotated[
        str | None,
        typer.Option(
            help="obs column with each perturbation's SMILES: the perturbations are molecules, "
            "embedded from their Morgan fingerprints (RDKit), so drugs never measured can be "
            "predicted and ranked from their structure."
        ),
    ] = None,
    smiles: Annotated[
        Path | None,
        typer.Option(
            help="CSV of name,SMILES (header optional) for the perturbations instead of (or "
            "beside) --smiles-key."
        ),
    ] = None,
    gene_embeddings: Annotated[
        Path | None,
        typer.Option(
            help="CSV or TSV table of gene embeddings (first column the gene, then numbers; e.g. "
            "from a foundation model or GO): knock-out targets are embedded from their row, so "
            "targets never perturbed in training can be predicted."
        ),
    ] = None,
    time_key: Annotated[str | None, typer.Option(help="obs column of the time.")] = None,
    continuous: Annotated[
        list[str] | None, typer.Option(help="Other continuous obs columns (repeatable).")
    ] = None,
    layer: Annotated[
        str | None,
        typer.Option(
            help="Layer holding expression instead of X (default: X, or the raw counts in "
            "layers['counts'] / .raw when X is log-normalized)."
        ),
    ] = None,
    use_raw: Annotated[
        bool, typer.Option("--use-raw", help="Read expression from .raw instead of X.")
    ] = False,
    input: Annotated[
        str,
        typer.Option(
            help="What the expression holds: auto (detect and say; ambiguous data are refused), "
            "counts, lognorm (natural log1p of normalized counts), log2, log10, or normalized "
            "(TPM, CPM, FPKM; unlogged)."
        ),
    ] = "auto",
    n_top_genes: Annotated[
        int,
        typer.Option(
            help="Genes modelled at most (0: every gene): every gene with a count up to this "
            "many, above it the most variable by Pearson residuals. Genes left out still "
            "appear in every output (var['rnadiff_modelled'] is False)."
        ),
    ] = 8192,
    genes: Annotated[
        str | None,
        typer.Option(help="Model exactly these genes: comma-separated, or a file of one per line."),
    ] = None,
    highly_variable: Annotated[
        bool | None,
        typer.Option(
            "--highly-variable/--ignore-highly-variable",
            help="Model the genes flagged in var['highly_variable'] (default: when the column "
            "exists).",
            show_default=False,
        ),
    ] = None,
    max_steps: Annotated[
        int | None,
        typer.Option(
            help="Optimizer steps in total (a resumed run continues up to this); with --epochs "
            "or --min-steps, the most steps. Default: 12 passes over the training cells, at "
            "least 800 and at most 4000 steps, but at least 2 passes (large data: 5M cells "
            "train 19,532 steps of 512)."
        ),
    ] = None,
    epochs: Annotated[
        float | None,
        typer.Option(
            help="Passes over the training cells a run aims for (default 12), kept between "
            "--min-steps and --max-steps."
        ),
    ] = None,
    min_steps: Annotated[
        int | None,
        typer.Option(help="Optimizer steps at least when the length follows --epochs (800)."),
    ] = None,
    max_epochs: Annotated[
        float | None,
        typer.Option(
            help="Passes over the training cells at most (default 200; 0: no cap): tiny data "
            "sets (a few hundred cells) memorize their cells with many passes."
        ),
    ] = None,
    min_epochs: Annotated[
        float | None,
        typer.Option(
            help="Passes over the training cells at least, past the default --max-steps "
            "(default 2; 0: no floor): a data set too large for 4000 steps to make 2 passes "
            "(over 1,024,000 cells at batch 512) trains longer, e.g. 19,532 steps for 5M cells. "
            "Never more passes than --epochs; a --max-steps given stays a hard cap.",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="Cells per minibatch (under torchrun: across all processes). Default: follows "
            "the data: 128, or 512 where 12 passes at 512 still make --min-steps steps (from "
            "34,134 cells at the defaults; 1.4x the cells/s on a CPU).",
            show_default=False,
        ),
    ] = None,
    lr: Annotated[
        float, typer.Option(help="Peak learning rate (AdamW, warm-up then cosine).")
    ] = 2e-3,
    checkpoint_every: Annotated[
        int | None,
        typer.Option(help="Steps between checkpoints in --out (default: four per run)."),
    ] = None,
    checkpoint_minutes: Annotated[
        float, typer.Option(help="Minutes between checkpoints at most, whatever the steps.")
    ] = 5.0,
    width: Annotated[int, typer.Option(help="Hidden width of the denoiser network.")] = 128,
    depth: Annotated[int, typer.Option(help="Residual blocks of the denoiser network.")] = 3,
    n_models: Annotated[
        int,
        typer.Option(
            help="Denoiser networks trained side by side and averaged (an ensemble: lower "
            "variance, n times the training and sampling time)."
        ),
    ] = 1,
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
            help="Training cells per pair of measured conditions from which the spread lost by "
            "counterfactual cells is calibrated after training (0: none)."
        ),
    ] = 256,
    anchor_cells: Annotated[
        int,
        typer.Option(
            help="Training control cells predicted under each measured condition after "
            "training, to measure the model's error at that condition's mean; "
            "'rnadiff predict' corrects by it (--no-anchor there to not) (0: none)."
        ),
    ] = 64,
    thinning: Annotated[
        float,
        typer.Option(
            help="Share of each training batch corrupted by thinning the cells' counts (a "
            "shallower copy of each cell) instead of Gaussian noise; 0.5 for a model meant for "
            "'rnadiff denoise' (raw counts only)."
        ),
    ] = 0.0,
    p_mean: Annotated[
        float,
        typer.Option(
            help="Mean of ln(sigma) of the training noise levels (EDM's -1.2). Higher values "
            "train more at high noise, where covariate effects are learned."
        ),
    ] = -1.2,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue training from the checkpoint in --out on the same --data (other "
            "data are refused), with the checkpoint's model and training settings: only "
            "--max-steps, --epochs, --min-steps, --max-epochs and --min-epochs (when given) "
            "apply.",
        ),
    ] = False,
    backed: Backed = None,
    device: Device = "auto",
    precision: Annotated[
        str,
        typer.Option(
            help="auto, fp32, or bf16 (autocast of the forward pass, fp32 weights). auto: bf16 "
            "for minibatches of 512 or more cells (large data) on a CPU that computes bf16 "
            "natively (AVX512-BF16 or AMX: 1.1-1.5x faster, same quality), fp32 otherwise."
        ),
    ] = "auto",
    compile: Annotated[
        bool, typer.Option("--compile", help="torch.compile the training step (GPU).")
    ] = False,
    seed: Seed = 0,
    threads: Threads = None,
    quiet: Quiet = False,
) -> None:
    """Train a conditional diffusion model on an .h5ad file and save it to a folder.

    Under torchrun (several processes, e.g. `torchrun --nproc_per_node 2 -m rnadiff.cli train
    ...`) the processes train one model together (DistributedDataParallel); only the first
    writes."""
    from rnadiff import (
        ConditioningConfig,
        DiffusionConfig,
        ModelConfig,
        NetworkConfig,
        PreprocessConfig,
        RNADiffusion,
        TrainConfig,
    )
    from rnadiff._config import PRECISIONS
    from rnadiff.data._io import check_creatable, check_not_over, check_replaceable
    from rnadiff.data._molecules import read_smiles_table
    from rnadiff.training._checkpoint import checkpoint_files
    from rnadiff.training._distributed import init_from_env, is_main

    _threads(threads)
    device = init_from_env(device)  # under torchrun: one model, several processes
    check_not_over(out, [data], "--out")
    check_creatable(out, "--out")
    if not resume:  # refused before any training, not after
        check_replaceable(out, ours=checkpoint_files, what="--out")
    elif not (out / "config.json").is_file():
        raise InputError(f"--resume: {out} holds no checkpoint to resume")
    length = dict(max_steps=max_steps, epochs=epochs, min_steps=min_steps, max_epochs=max_epochs)
    if min_epochs is not None and min_epochs < 0:
        raise InputError(f"--min-epochs must be >= 0 (0: no floor), got {min_epochs:g}")
    if batch_size is not None and batch_size < 1:
        raise InputError(
            f"--batch-size must be at least 1, got {batch_size} (leave it out to let it "
            "follow the data)"
        )
    if precision not in PRECISIONS:
        raise InputError(f"--precision must be auto, fp32 or bf16, got {precision!r}")
    # TrainConfig's floor of passes (None: none); not given: the default or the checkpoint's
    floor = {} if min_epochs is None else {"min_epochs": min_epochs or None}
    adata = _read(data, backed=backed)
    t0 = time.perf_counter()
    if resume:
        ignored = [
            "--" + p.name.replace("_", "-")
            for p in ctx.command.params
            if p.name not in _RESUME_OPTIONS and _given(ctx, p.name)
        ]
        model = RNADiffusion.load(out, adata=adata)
        typer.echo(f"resuming from step {model.step} of {out}")
        if ignored:
            typer.echo(
                "note: --resume keeps the checkpoint's model and training settings; only "
                "--max-steps, --epochs, --min-steps, --max-epochs and --min-epochs (when given) "
                "apply; "
                f"ignored: {', '.join(ignored)}",
                err=True,
            )
        kept = model.train_config or TrainConfig()
        resumed = dataclasses.replace(kept, **floor) if floor else None
        model.train(
            **length,
            config=resumed,
            checkpoint_dir=out,
            progress=not quiet,
            device=device,
            compile=compile,
        )
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
            combination_sep=combination_sep or None,
            smiles_key=smiles_key,
            smiles=None if smiles is None else read_smiles_table(smiles),
            layer=layer,
            use_raw=use_raw,
        )
        preprocess = PreprocessConfig(
            input=input,
            n_top_genes=n_top_genes or None,
            genes=_gene_list(genes),
            use_highly_variable=highly_variable,
        )
        config = ModelConfig(
            preprocess=preprocess,
            network=NetworkConfig(width=width, depth=depth, n_models=n_models),
            diffusion=DiffusionConfig(p_mean=p_mean),
            conditioning=ConditioningConfig(dose_response=dose_response, dose_unknown=dose_unknown),
        )
        train_config = TrainConfig(
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            checkpoint_every=checkpoint_every,
            checkpoint_minutes=checkpoint_minutes,
            calibration_cells=calibration_cells,
            spread_cells=spread_cells,
            anchor_cells=anchor_cells,
            thinning=thinning,
            precision=precision,
            **floor,
        )
        table = None if gene_embeddings is None else _embedding_table(gene_embeddings)
        model = RNADiffusion(adata, config=config, gene_embeddings=table, seed=seed)
        model.train(
            **length,
            config=train_config,
            checkpoint_dir=out,
            progress=not quiet,
            device=device,
            compile=compile,
        )
    model.save(out)
    if not is_main():
        return
    last = model.history[-1]["loss"] if model.history else float("nan")
    typer.echo(
        f"{model!r}\nfinal loss {last:.4f}; saved to {out} ({time.perf_counter() - t0:.0f} s)"
    )
