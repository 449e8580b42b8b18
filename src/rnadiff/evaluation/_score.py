"""Score predicted cells (AnnData) against real cells: the AnnData edge of the metrics."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from rnadiff._config import PreprocessConfig
from rnadiff._errors import InputError
from rnadiff.data._expression import Source, detect, matrix
from rnadiff.data._preprocessing import log_values, totals
from rnadiff.data._validation import check_genes, check_matrix
from rnadiff.evaluation._metrics import (
    discrimination_score,
    response_metrics,
    target_gene_columns,
)
from rnadiff.model._data import check_cells


def _check_genes(available, genes: list[str], *, what: str) -> None:
    """Every gene of the predicted cells must be among ``available`` (no model here)."""
    check_genes(
        available,
        genes,
        what=what,
        reference="the predicted cells",
        possessive="the predicted cells'",
        hint="the real and control cells must hold every gene of the predicted cells, under "
        "the same gene names (var_names)",
    )


def _log_values(
    adata: ad.AnnData, genes: list[str], *, what: str, layer: str | None = None
) -> np.ndarray:
    """Natural log-normalized values of ``genes`` (of ``X`` or ``layer``): counts and
    unlogged values are normalized to 1e4 per cell first, log2 / log10 values converted;
    a matrix whose kind cannot be told is an error."""
    check_cells(adata, what)
    source = Source(layer=layer)
    X = matrix(adata, source)[0]
    where = f"{what}.X" if layer is None else f"{what}.layers[{layer!r}]"
    check_matrix(X, what=where)
    _check_genes(adata.var_names, genes, what=what)
    columns = adata.var_names.get_indexer(genes)
    info = detect(adata, source)
    if info.ambiguous is not None:
        raise InputError(
            f"cannot tell what {where} holds: {info.ambiguous} (or record the base in "
            "uns['log1p'], as sc.pp.log1p does)"
        )
    base = info.log_base or "e"
    cell_totals = None if info.kind == "lognorm" else totals(X)
    return log_values(X, columns, info.kind, base, PreprocessConfig().target_sum, cell_totals)


def score(
    pred: ad.AnnData,
    real: ad.AnnData,
    control: ad.AnnData,
    *,
    top_n: tuple[int, ...] = (20, 100),
    distributional: bool = True,
    seed: int = 0,
    layer: str | None = None,
) -> pd.Series:
    """All response metrics of ``pred`` against ``real``, changes measured from ``control``.

    Parameters
    ----------
    pred
        Predicted cells (log-normalized, e.g. from ``RNADiffusion.predict``); its genes are
        the genes scored.
    real, control
        Real perturbed and real control cells of the same context; raw counts (normalized to
        1e4 per cell and log1p-transformed here, with size factors over all their genes) or
        log-normalized values. Both must contain every gene of ``pred``.
    top_n
        Sizes of the DE gene sets (top Wilcoxon genes of real vs control).
    distributional
        Also compute E-distance, MMD, kNN AUC, DE overlap and direction agreement.
    seed
        Seed of subsampling in the distributional metrics.
    layer
        Layer of ``real`` and ``control`` holding their expression (default: ``X``).

    Returns
    -------
    pandas.Series
        One value per metric.
    """
    genes = [str(g) for g in pred.var_names]
    _check_genes(real.var_names, genes, what="the real cells")
    _check_genes(control.var_names, genes, what="the control cells")
    x_pred = _log_values(pred, genes, what="pred")
    x_real = _log_values(real, genes, what="real", layer=layer)
    x_ctrl = _log_values(control, genes, what="control", layer=layer)
    metrics = response_metrics(
        x_pred, x_real, x_ctrl, top_n=top_n, distributional=distributional, seed=seed
    )
    return pd.Series(metrics, name="value")


def _labels(adata: ad.AnnData, by: str, *, what: str) -> np.ndarray:
    """The condition label of every cell (text); a missing column or label is an error."""
    if by not in adata.obs:
        raise InputError(
            f"column {by!r} not in the {what} cells' obs; columns: {list(adata.obs.columns)}"
        )
    column = adata.obs[by]
    if column.isna().any():
        raise InputError(
            f"column {by!r} of the {what} cells has {int(column.isna().sum())} empty values"
        )
    return column.astype(str).to_numpy()


def score_conditions(
    pred: ad.AnnData,
    real: ad.AnnData,
    control: ad.AnnData,
    *,
    by: str,
    top_n: tuple[int, ...] = (20, 100),
    distributional: bool = True,
    seed: int = 0,
    control_label: str | None = None,
    sep: str = "+",
    layer: str | None = None,
) -> pd.DataFrame:
    """Score every predicted condition against the real cells of the same condition.

    The cells of ``pred`` and ``real`` are grouped by their label in ``obs[by]`` (e.g. the
    perturbation); each predicted group is scored by :func:`score`'s metrics against the real
    group of the same label, all changes measured from the same ``control`` cells. With two or
    more real conditions it also gets the perturbation discrimination score
    (:func:`rnadiff.evaluation._metrics.discrimination_score`, L1): ``discrimination`` leaves
    the condition's own target genes out of its comparison (the parts of a label ``A+B`` that
    are genes of ``pred``), as cell-eval does; ``discrimination_all_genes`` keeps them. Cells
    labelled ``control_label`` are not a condition, so ``real`` may be a whole data set.

    Parameters
    ----------
    pred
        Predicted cells (log-normalized) of one or more conditions; its genes are scored.
    real
        Real cells (counts or log-normalized) of at least every predicted condition; its
        other conditions are the discrimination score's other candidates.
    control
        Real control cells shared by all conditions.
    by
        The ``obs`` column naming each cell's condition in ``pred`` and ``real``.
    top_n, distributional, seed
        As in :func:`score`.
    control_label
        The label of control cells in ``obs[by]`` (e.g. ``non-targeting``), left out of the
        conditions of ``pred`` and ``real``. Default: the control cells' label when they have
        the column and all share one label; otherwise none.
    sep
        Separator of combined perturbations in a label.
    layer
        Layer of ``real`` and ``control`` holding their expression (default: ``X``).

    Returns
    -------
    pandas.DataFrame
        One row per predicted condition (index: the label): ``n_pred``, ``n_real``, every
        metric of :func:`score`, and the discrimination scores when there are two or more
        real conditions.
    """
    genes = [str(g) for g in pred.var_names]
    _check_genes(real.var_names, genes, what="the real cells")
    _check_genes(control.var_names, genes, what="the control cells")
    pred_labels = _labels(pred, by, what="predicted")
    real_labels = _labels(real, by, what="real")
    if control_label is None and by in control.obs:
        own = set(_labels(control, by, what="control"))
        control_label = own.pop() if len(own) == 1 else None
    ctrl_labels = set() if control_label is None else {str(control_label)}
    conditions = [c for c in dict.fromkeys(pred_labels) if c not in ctrl_labels]
    if not conditions:
        raise InputError(f"the predicted cells hold no condition of {by!r} other than the control")
    candidates = [c for c in dict.fromkeys(real_labels) if c not in ctrl_labels]
    unknown = [c for c in conditions if c not in candidates]
    if unknown:
        raise InputError(
            f"predicted conditions without real cells in column {by!r}: {unknown[:10]}"
            f"{' ...' if len(unknown) > 10 else ''}; real conditions: {candidates[:10]}"
        )
    x_pred = _log_values(pred, genes, what="pred")
    x_real = _log_values(real, genes, what="real", layer=layer)
    x_ctrl = _log_values(control, genes, what="control", layer=layer)
    rows = {}
    for c in conditions:
        p, r = x_pred[pred_labels == c], x_real[real_labels == c]
        metrics = response_metrics(
            p, r, x_ctrl, top_n=top_n, distributional=distributional, seed=seed
        )
        rows[c] = {"n_pred": len(p), "n_real": len(r), **metrics}
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis(by)
    if len(candidates) >= 2:
        preds = {c: x_pred[pred_labels == c] for c in conditions}
        reals = {c: x_real[real_labels == c] for c in candidates}
        exclude = target_gene_columns(conditions, genes, sep=sep)
        exclude = {c: i for c, i in exclude.items() if len(i) < len(genes)}  # keep some genes
        per, _ = discrimination_score(preds, reals, x_ctrl, exclude=exclude)
        every, _ = discrimination_score(preds, reals, x_ctrl)
        table["discrimination"] = pd.Series(per)
        table["discrimination_all_genes"] = pd.Series(every)
    return table
