"""``rnadiff generate | predict | denoise``: cells from a trained model."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer
from tqdm.auto import tqdm

from rnadiff._errors import InputError
from rnadiff.cli._common import (
    Backed,
    Calibrated,
    ChunkCells,
    GenePrior,
    GuidanceOpt,
    Layer,
    ModelDir,
    NewDrugs,
    Quiet,
    Sampler,
    Seed,
    Steps,
    Threads,
    TransferOpt,
    TransferScale,
    Where,
    _check_out,
    _guidance,
    _load,
    _pairs,
    _read,
    _subset,
    _summary,
    _threads,
    _where_mask,
    _write,
)
from rnadiff.data._io import write_h5ad_chunks
from rnadiff.model._output import var_table

Counts = Annotated[
    bool,
    typer.Option(
        "--counts",
        help="Also raw counts (models trained on raw counts only): integers in "
        "layers['counts'] at library sizes drawn from each cell's condition (predict: each "
        "source cell keeps its depth's rank), obs['total_counts'], and X their "
        "log-normalized values. Use it for differential expression of predicted against "
        "real cells (Wilcoxon tests, cell-eval): without it, genes at zero in real cells get "
        "small non-zero values that such tests call significant. Not with chunked output "
        "(cells above --chunk-cells).",
    ),
]


def _no_chunked_counts(counts: bool, n_cells: int, chunk_cells: int, *, backed=False) -> None:
    """Chunked outputs carry X and obs only: --counts needs the output in one piece."""
    if counts and backed:
        raise InputError(
            "--counts: a source read from disk (--backed) is predicted and written in chunks, "
            "which carry X only; give --in-memory or leave out --counts"
        )
    if counts and n_cells > chunk_cells:
        raise InputError(
            f"--counts: {n_cells} cells would be written in chunks of --chunk-cells "
            f"{chunk_cells}, which carry X only; raise --chunk-cells to at least {n_cells} or "
            "leave out --counts"
        )


def _conditions_csv(path: Path):
    """The conditions of a --conditions-csv file, one per row, as text (empty: unspecified)."""
    import pandas as pd

    if path.is_dir():
        raise InputError(f"--conditions-csv {path} is a directory, not a CSV file")
    if not path.is_file():
        raise InputError(f"--conditions-csv: file not found: {path}")
    from rnadiff.data._io import protect

    protect(path)
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
    if any(str(c).startswith("Unnamed:") for c in frame.columns):
        raise InputError(f"--conditions-csv {path}: a column has no name in the header row")
    return frame  # the model turns continuous covariates' text into numbers


def generate(
    model: ModelDir,
    out: Annotated[Path, typer.Option(help="Output .h5ad of generated cells.")],
    condition: Annotated[
        list[str] | None,
        typer.Option(
            help="KEY=VALUE of one condition (repeatable: all form one condition); covariates "
            "left out are unspecified."
        ),
    ] = None,
    conditions_csv: Annotated[
        Path | None,
        typer.Option(
            help="CSV with one condition per row and covariates as columns (instead of "
            "--condition)."
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
    counts: Counts = False,
    anchor: Annotated[
        bool,
        typer.Option(
            "--anchor/--no-anchor",
            help="Move generated cells to the training means: a measured condition's cells "
            "are shifted gene by gene to its training mean (values below 0 become zeros); "
            "any other condition is decoded from the same noise under its context's control "
            "too, both are shifted by the control's generation bias, and the perturbation's "
            "cells are corrected as 'rnadiff predict' corrects counterfactuals (mean anchors, "
            "a drug never measured from the measured drugs). Twice the sampling work for "
            "conditions never measured. --no-anchor: the network's own cells.",
        ),
    ] = True,
    chunk_cells: ChunkCells = 50000,
    smiles: NewDrugs = None,
    seed: Seed = 0,
    threads: Threads = None,
    quiet: Quiet = False,
) -> None:
    """Generate cells under given conditions.

    The output holds the log-normalized expression of every gene the model was trained on
    (and counts with --counts); each cell's condition is in .obs."""
    _threads(threads)
    _check_out(out)
    if conditions_csv is not None and condition:
        raise InputError("give either --condition or --conditions-csv, not both")
    conds = _conditions_csv(conditions_csv) if conditions_csv else _pairs(condition, "--condition")
    m = _load(model, smiles)
    kw = dict(sampler=sampler, steps=steps, guidance=_guidance(guidance), transfer=transfer)
    kw |= dict(transfer_scale=transfer_scale, prior=gene_prior, calibrated=calibrated)
    kw |= dict(counts=counts, anchor=anchor)
    t0 = time.perf_counter()
    frame = pd.DataFrame([conds]) if isinstance(conds, dict) else conds
    _no_chunked_counts(counts, n * len(frame), chunk_cells)
    if n * len(frame) <= chunk_cells:
        cells = m.generate(conds, n_cells=n, seed=seed, progress=not quiet, **kw)
        _write(cells, out)
        _summary(cells, m.registry.keys, out, time.perf_counter() - t0)
        return
    # many cells: each condition in chunks (seed + chunk number), written as they come
    parts = [(i, k) for i in range(len(frame)) for k in range(0, n, chunk_cells)]
    uns: dict = {}

    def chunks():
        for number, (i, k) in enumerate(tqdm(parts, disable=quiet, desc="generating")):
            row = frame.iloc[[i]].dropna(axis=1)
            part = m.generate(
                row, n_cells=min(chunk_cells, n - k), seed=seed + number, **kw, progress=False
            )
            part.obs["rnadiff_condition"] = i
            uns.setdefault("rnadiff", {**part.uns["rnadiff"], "chunked": chunk_cells})
            uns["log1p"] = {"base": None}
            yield part.X, part.obs

    var = var_table(m.preprocess)
    _check_out(out)  # again, now that the inputs are known
    total = write_h5ad_chunks(out, chunks(), var=var, uns=uns)
    typer.echo(
        f"wrote {total} cells x {len(var)} genes to {out} in chunks of {chunk_cells} ({time.perf_counter() - t0:.1f} s)"
    )


def predict(
    model: ModelDir,
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
    where: Where = None,
    layer: Layer = None,
    method: Annotated[
        str,
        typer.Option(
            help="counterfactual (encode each cell, decode under the target) or generate (new "
            "cells under each cell's target condition)."
        ),
    ] = "counterfactual",
    encode_sigma: Annotated[
        float | None,
        typer.Option(
            help="Counterfactual: noise level cells are encoded to (default: the maximum; lower "
            "keeps more of the cell)."
        ),
    ] = None,
    sampler: Sampler = "dpmpp_2m",
    steps: Steps = 20,
    guidance: GuidanceOpt = "1",
    transfer: TransferOpt = "compose",
    transfer_scale: TransferScale = None,
    gene_prior: GenePrior = False,
    calibrated: Calibrated = True,
    anchor: Annotated[
        bool,
        typer.Option(
            "--anchor/--no-anchor",
            help="Counterfactual of control cells: correct each predicted cell by the model's "
            "own error at the measured conditions its target is built from, as measured on "
            "the training cells after training (the condition itself, the doses or times "
            "measured around it, or a combination's parts), so measured conditions keep their "
            "training means; a drug never measured takes the blend of the measured drugs' "
            "mean changes (its most similar structures and the average, by the trust in "
            "structure fitted after training); --no-anchor: the network's own means.",
        ),
    ] = True,
    spread: Annotated[
        bool,
        typer.Option(
            "--spread/--no-spread",
            help="Counterfactual: widen each target condition's predicted cells around their "
            "mean by the spread that encoding and decoding lose, as measured on the training "
            "cells (every gene's mean is kept); --no-spread: the cells as decoded.",
        ),
    ] = True,
    counts: Counts = False,
    state_key: Annotated[
        str | None,
        typer.Option(
            help="Cell fate: the column of --reference's obs holding cell states. The predicted "
            "cells are classified into these states (PCA + logistic regression fitted on the "
            "reference cells; its cross-validated accuracy is printed) and each target's state "
            "composition is reported, adjusted for the classifier's cross-validated confusion, "
            "with a 95% bootstrap interval over cells; stored in obs['rnadiff_state'] and "
            "uns['rnadiff_fate'] of --out. For a change of composition use --method generate: "
            "a counterfactual keeps each source cell's own state.",
        ),
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option(
            help="With --state-key: cells with known states (.h5ad, e.g. the training cells) "
            "that define the states and train the classifier."
        ),
    ] = None,
    fate_csv: Annotated[
        Path | None,
        typer.Option(
            help="With --state-key: also write the compositions to this .csv (target, state, "
            "proportion, low, high, n_cells; target 'source': the source cells, by their own "
            "--state-key labels when they have them, else classified alike)."
        ),
    ] = None,
    fate_plot: Annotated[
        Path | None,
        typer.Option(
            help="With --state-key: also draw the compositions to this .png (a bar per target "
            "and one for the source cells)."
        ),
    ] = None,
    backed: Backed = None,
    chunk_cells: ChunkCells = 50000,
    smiles: NewDrugs = None,
    seed: Seed = 0,
    threads: Threads = None,
    quiet: Quiet = False,
) -> None:
    """Predict source cells under a target perturbation (counterfactual or generation).

    Genes the model does not model keep the source cells' values. With --state-key and
    --reference: what the predicted cells become, as state compositions (cell fate)."""
    _threads(threads)
    _check_out(out)
    _check_fate_options(state_key, reference, fate_csv, fate_plot)
    target = _pairs(set, "--set")
    m = _load(model, smiles)
    src = _read(source, backed=backed)
    rows = np.flatnonzero(_where_mask(src, where, "--where", source))
    perts = perturbation[0] if perturbation and len(perturbation) == 1 else perturbation
    t0 = time.perf_counter()
    predict_kw = dict(
        perturbation=perts,
        target=target,
        method=method,
        sampler=sampler,
        steps=steps,
        guidance=_guidance(guidance),
        transfer=transfer,
        transfer_scale=transfer_scale,
        encode_sigma=encode_sigma,
        prior=gene_prior,
        calibrated=calibrated,
        anchor=anchor,
        spread=spread,
        layer=layer,
        counts=counts,
        seed=seed,
    )
    _no_chunked_counts(counts, len(rows), chunk_cells, backed=src.isbacked)
    if state_key and (len(rows) > chunk_cells or src.isbacked):
        raise InputError(
            f"--state-key classifies the predicted cells in memory: at most --chunk-cells "
            f"({chunk_cells}) source cells read in memory, got {len(rows)}"
            + (" read backed (use --no-backed)" if src.isbacked else "")
        )
    ref = _read(reference, "--reference") if state_key else None
    if len(rows) <= chunk_cells and not src.isbacked:
        if state_key:
            pred = _fate(m, src[rows], ref, state_key, fate_csv, fate_plot, quiet, predict_kw)
        else:
            pred = m.predict(src[rows], progress=not quiet, **predict_kw)
        _write(pred, out)
        _summary(pred, m.registry.keys, out, time.perf_counter() - t0)
        return
    # many cells: the source read and predicted a chunk at a time, written as it comes (the
    # spread widening is then relative to each chunk's cells)
    uns: dict = {}

    def chunks():
        starts = range(0, len(rows), chunk_cells)
        for start in tqdm(starts, disable=quiet, desc="predicting"):
            part = src[rows[start : start + chunk_cells]]
            part = part.to_memory() if src.isbacked else part
            pred = m.predict(part, progress=False, **predict_kw)
            uns.setdefault("rnadiff", {**pred.uns["rnadiff"], "chunked": chunk_cells})
            uns["log1p"] = {"base": None}
            yield pred.X, pred.obs

    _check_out(out)  # again, now that the inputs are known
    total = write_h5ad_chunks(out, chunks(), var=var_table(m.preprocess), uns=uns)
    typer.echo(
        f"wrote {total} predicted cells to {out} in chunks of {chunk_cells} ({time.perf_counter() - t0:.1f} s)"
    )


def _check_fate_options(state_key, reference, fate_csv, fate_plot) -> None:
    """Refuse an incomplete set of the cell-fate options early, before any work."""
    if state_key is None:
        given = [o for o, v in (("--reference", reference), ("--fate-csv", fate_csv),
                                ("--fate-plot", fate_plot)) if v is not None]  # fmt: skip
        if given:
            raise InputError(f"{', '.join(given)} need --state-key (the column of cell states)")
        return
    if reference is None:
        raise InputError("--state-key needs --reference: cells with known states (.h5ad)")
    if fate_csv is not None:
        _check_out(fate_csv, ".csv", "--fate-csv")
    if fate_plot is not None:
        _check_out(fate_plot, ".png", "--fate-plot")


def _fate(model, source, reference, state_key, fate_csv, fate_plot, quiet, predict_kw):
    """The source cells predicted and classified into the reference's states
    (:func:`rnadiff.fate.predict_fate`); each target's composition and the source cells'
    printed, stored and optionally written / drawn. Returns the predicted cells."""
    from rnadiff.data._io import write_csv
    from rnadiff.fate import (
        add_states,
        composition,
        compositions_by,
        fate_table,
        fit_state_classifier,
        plot_fate,
        predict_fate,
    )

    seed = predict_kw["seed"]
    clf = fit_state_classifier(model, reference, state_key, seed=seed)
    pred = predict_fate(
        model, source, reference=reference, state_key=state_key, classifier=clf,
        progress=not quiet, **predict_kw,
    )  # fmt: skip
    pkey = model.registry.perturbation_key
    if pkey in pred.obs and pred.obs[pkey].nunique() > 1:
        table = compositions_by(pred, clf, pkey, seed=seed).rename(columns={pkey: "target"})
    else:  # one target: the composition predict_fate stored
        name = str(pred.obs[pkey].iloc[0]) if pkey in pred.obs else "predicted"
        table = fate_table(pred).reset_index().assign(target=name)
    if state_key in source.obs and source.obs[state_key].notna().all():
        how = f"their own {state_key} labels"  # the source's composition is known
        labels = source.obs[state_key].astype(str).to_numpy()
        src_table = composition(labels, clf.states_, seed=seed)
    else:  # classified alike, as the predicted cells
        how = "classified as the predicted cells"
        src_table = add_states(model, source.copy(), clf, seed=seed)
    table = pd.concat([table, src_table.reset_index().assign(target="source")])
    table = table.reset_index(drop=True)[["target", "state", "proportion", "low", "high",
                                          "n_cells"]]  # fmt: skip
    pred.uns["rnadiff_fate"]["by_target"] = {
        t: {c: g[c].to_numpy() for c in ("state", "proportion", "low", "high", "n_cells")}
        for t, g in table.groupby("target", sort=False)
    }
    typer.echo(
        f"cell states ({state_key}): classifier cross-validated balanced accuracy "
        f"{clf.cv_accuracy_:.3f}; compositions adjusted for its confusion; source: {how}"
    )
    wide = table.pivot(index="state", columns="target", values="proportion")
    typer.echo(wide[list(dict.fromkeys(table.target))].round(3).to_string())
    if fate_csv is not None:
        write_csv(table, fate_csv, what="--fate-csv", index=False)
    if fate_plot is not None:
        parts = {t: g.set_index("state") for t, g in table.groupby("target", sort=False)}
        plot_fate(parts, fate_plot, title=f"state composition ({state_key})")
    return pred


def _sigma(text: str) -> float | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise InputError(f"--sigma must be a positive number or 'auto', got {text!r}") from None


def denoise(
    data: Annotated[
        Path,
        typer.Option(
            help="Cells to denoise (.h5ad). Without --model: raw counts (integers) in X or "
            "--layer, at least 20 cells. With --model: raw counts or log-normalized, as the "
            "model's training data, with its genes; registered covariate columns in obs are "
            "used where present."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            help="Output .h5ad: the --data cells as they were, plus the denoised log-normalized "
            "values (natural log1p per 10,000 counts) of every gene in layers[--key-added] and "
            "how they were made in uns[--key-added] (nothing of the input overwritten)."
        ),
    ],
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            help="A model folder written by 'rnadiff train' on deeper or cleaner cells of the "
            "same kind (a reference): the cells are denoised towards it (the posterior mean of "
            "each clean profile). Without it (default): self-supervised, a network learns "
            "from the --data counts alone to predict UMIs held out of each cell (a binomial "
            "split, molecular cross-validation) and then denoises every cell from all its "
            "counts.",
        ),
    ] = None,
    sigma: Annotated[
        str | None,
        typer.Option(
            help="With --model only: noise level the cells are taken to carry, in per-gene "
            "training standard deviations (larger pulls harder towards the training cells), "
            "or 'auto' (default): each cell's counting noise beyond the training cells', from "
            "its total counts (raw counts only).",
            show_default=False,
        ),
    ] = None,
    max_steps: Annotated[
        int,
        typer.Option(
            help="Without --model: training steps at most (training stops earlier once the "
            "held-out cells' loss stops improving)."
        ),
    ] = 3000,
    width: Annotated[
        int,
        typer.Option(
            help="Without --model: hidden width of the network (smaller: a coarser, more "
            "strongly smoothed picture of each cell)."
        ),
    ] = 256,
    n_models: Annotated[
        int,
        typer.Option(
            help="Without --model: networks trained (each with its own seed) and averaged; "
            "more give a steadier result and take longer (1: one network, the fastest)."
        ),
    ] = 3,
    layer: Layer = None,
    key_added: Annotated[
        str, typer.Option(help="Layer (and uns key) of the output holding the denoised values.")
    ] = "rnadiff_denoised",
    where: Where = None,
    seed: Seed = 0,
    threads: Threads = None,
    quiet: Quiet = False,
) -> None:
    """Denoise cells: self-supervised from their own counts, or with a reference model.

    Without --model, rnadiff learns from the --data counts themselves (no deeper data
    needed) and warns when it learned nothing beyond the average cell. With --model, the
    cells are pulled towards the model's training cells."""
    _threads(threads)
    _check_out(out)
    if model is None and sigma is not None:
        raise InputError("--sigma needs --model (self-supervised denoising sets no noise level)")
    for flag, value, default in (
        ("--max-steps", max_steps, 3000),
        ("--width", width, 256),
        ("--n-models", n_models, 3),
    ):
        if value < 1:
            raise InputError(f"{flag} must be at least 1, got {value}")
        if model is not None and value != default:
            raise InputError(f"{flag} is for self-supervised denoising; leave it out with --model")
    m = _load(model) if model is not None else None
    cells = _subset(_read(data), where, "--where", data).copy()
    t0 = time.perf_counter()
    if m is not None:
        m.denoise(
            cells,
            sigma=_sigma(sigma or "auto"),
            layer=layer,
            key_added=key_added,
            inplace=True,
            progress=not quiet,
        )
    else:
        from rnadiff.model._self_denoise import denoise as self_denoise

        self_denoise(
            cells,
            layer=layer,
            key_added=key_added,
            max_steps=max_steps,
            width=width,
            n_models=n_models,
            seed=seed,
            progress=not quiet,
        )
        info = cells.uns[key_added]
        models = info["models"]
        typer.echo(
            f"held-out loss per UMI {info['best_loss']:.4f} vs {info['baseline_loss']:.4f} for "
            f"the average cell ({100 * info['gain']:.1f}% lower; mean of {n_models} "
            f"network{'s' if n_models > 1 else ''}), best at step "
            + ", ".join(
                f"{b} of {n}" for b, n in zip(models["best_step"], models["steps"], strict=True)
            )
        )
    _write(cells, out)
    _summary(cells, m.registry.keys if m is not None else [], out, time.perf_counter() - t0)
