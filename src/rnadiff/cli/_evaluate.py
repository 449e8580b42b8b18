"""``rnadiff evaluate | demo``: score predictions against real cells; the demo end to end."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from rnadiff._errors import InputError
from rnadiff.cli._common import (
    GuidanceOpt,
    Quiet,
    Seed,
    Steps,
    Threads,
    TransferOpt,
    TransferScale,
    _check_out,
    _csv,
    _guidance,
    _read,
    _subset,
    _threads,
)


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
    layer: Annotated[
        str | None,
        typer.Option(help="Layer of --real and --control holding expression (default: X)."),
    ] = None,
    seed: Seed = 0,
    threads: Threads = None,
) -> None:
    """Score predicted cells against real ones: R² of means, Pearson delta, E-distance, MMD, ..."""
    from rnadiff.evaluation._score import score, score_conditions

    _threads(threads)
    if out is not None:
        _check_out(out, ".csv")
    if plot is not None:
        _check_out(plot, ".png", "--plot")
    predicted = _read(pred)
    real_cells = _subset(_read(real), real_where, "--real-where", real)
    control_file = control or real
    control_cells = _subset(_read(control_file), control_where, "--control-where", control_file)
    for option, value in (("--control-label", control_label), ("--plot", plot)):
        if value is not None and by is None:
            raise InputError(f"{option} needs --by (per-condition scores)")
    if by is not None:
        table = score_conditions(
            predicted,
            real_cells,
            control_cells,
            by=by,
            seed=seed,
            control_label=control_label,
            layer=layer,
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
            _csv(table, out)
        if plot is not None:
            from rnadiff.evaluation._plots import plot_conditions

            plot_conditions(table, plot, title=f"{pred.name}: scores per {by}")
            typer.echo(f"plot: {plot}")
        return
    metrics = score(predicted, real_cells, control_cells, seed=seed, layer=layer)
    typer.echo(
        f"{predicted.n_obs} predicted vs {real_cells.n_obs} real cells "
        f"({control_cells.n_obs} control) on {predicted.n_vars} genes"
    )
    typer.echo(metrics.to_string(float_format=lambda v: f"{v:.4f}"))
    if out is not None:
        _csv(metrics.rename_axis("metric"), out)


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
    threads: Threads = None,
    quiet: Quiet = False,
) -> None:
    """Kang 2018 IFN-beta: hold out one cell type's stimulated cells, train, predict, score."""
    from rnadiff.evaluation._demo import format_table, run_demo

    _threads(threads)
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
