"""``rnadiff design | rank``: cells that meet a phenotype, and the perturbations that make it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from rnadiff._errors import InputError
from rnadiff.cli._common import (
    GuidanceOpt,
    Layer,
    ModelDir,
    Quiet,
    Seed,
    Steps,
    Threads,
    _cells,
    _check_out,
    _csv,
    _genes,
    _guidance,
    _load,
    _pairs,
    _read,
    _subset,
    _threads,
    _write,
)


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


def design(
    model: ModelDir,
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
    layer: Layer = None,
    seed: Seed = 0,
    threads: Threads = None,
    quiet: Quiet = False,
) -> None:
    """Design cells whose marker genes meet a specification, and say how realistic they are."""
    _threads(threads)
    _check_out(out)
    if plot is not None:
        _check_out(plot, ".png", "--plot")
    spec = _markers(up, down, min_lfc, percentile)
    conditions = _pairs(condition, "--condition")
    m = _load(model)
    ref = _cells(reference, reference_where, "--reference-where")
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
        layer=layer,
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


def _with_smiles(model, names, path: Path) -> dict[str, str]:
    """``--smiles``: the file's molecules, and the named candidates (default: every drug the
    model was trained on) with the SMILES the model knows them by."""
    from rnadiff.data._io import protect
    from rnadiff.data._molecules import read_smiles_table

    protect(path)
    table = read_smiles_table(path)
    features = model.engine.features
    known = dict(features.molecules) if features is not None else {}
    if not known:
        raise InputError(
            "--smiles: this model does not embed drugs by structure; train it with "
            "--smiles-key or --smiles to rank new compounds"
        )
    names = list(known) if names is None else list(names)
    missing = [n for n in names if n not in known and n not in table]
    if missing:
        raise InputError(
            f"--candidates {missing} have no SMILES: give them in --smiles, or leave them out"
        )
    return {**{n: table.get(n, known.get(n)) for n in names}, **table}


def rank(
    model: ModelDir,
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
    smiles: Annotated[
        Path | None,
        typer.Option(
            help="CSV of name,SMILES (header optional): molecules ranked beside --candidates "
            "(default: beside every drug of the model), embedded from their structure, so "
            "compounds never measured can be ranked. The model must have been trained with "
            "SMILES (train --smiles-key or --smiles)."
        ),
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
    anchor: Annotated[
        bool,
        typer.Option(
            "--anchor/--no-anchor",
            help="Generation score: move each candidate's generated cells to the training "
            "means of the measured conditions it is built from, as 'rnadiff predict' does (a "
            "drug never measured: to the measured drugs' changes by structure); --no-anchor: "
            "the network's own cells. The likelihood score is the network's either way.",
        ),
    ] = True,
    out: Annotated[Path | None, typer.Option(help="Write the full ranking as CSV.")] = None,
    plot: Annotated[Path | None, typer.Option(help="PNG bar chart of the best candidates.")] = None,
    top: Annotated[int, typer.Option(help="Candidates printed and plotted (0: all).")] = 10,
    layer: Layer = None,
    seed: Seed = 0,
    threads: Threads = None,
    quiet: Quiet = False,
) -> None:
    """Rank candidate perturbations by how well they would produce a target phenotype."""
    _threads(threads)
    if out is not None:
        _check_out(out, ".csv")
    if plot is not None:
        _check_out(plot, ".png", "--plot")
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
    m = _load(model)
    if target is not None:
        goal = _subset(_read(target), target_where, "--target-where", target)
    else:
        goal = _markers(up, down, min_lfc, percentile)
    ref = _cells(reference, reference_where, "--reference-where")
    names = _genes(candidates) or None
    if smiles is not None:
        names = _with_smiles(m, names, smiles)
    t0 = time.perf_counter()
    ranked = m.rank_perturbations(
        goal,
        candidates=names,
        context=context_pairs,
        pairs=pairs,
        reference=ref,
        n_cells=n,
        anchor=anchor,
        layer=layer,
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
        _csv(ranked, out, index=False)
        typer.echo(f"wrote {out}")
    if plot is not None:
        from rnadiff.evaluation._plots import plot_ranking

        plot_ranking(ranked, plot, top=top)
        typer.echo(f"plot: {plot}")
