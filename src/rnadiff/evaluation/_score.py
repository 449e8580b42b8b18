"""Score predicted cells (AnnData) against real cells: the AnnData edge of the metrics."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd

from rnadiff._config import PreprocessConfig
from rnadiff._errors import InputError
from rnadiff.data._expression import Source, detect, matrix
from rnadiff.data._preprocessing import (
    SCALE_TOLERANCE,
    log_scale,
    log_values,
    rescaled,
    totals,
)
from rnadiff.data._validation import check_genes, check_matrix
from rnadiff.evaluation._metrics import (
    discrimination_score,
    response_metrics,
    target_gene_columns,
)
from rnadiff.model._data import check_cells

logger = logging.getLogger("rnadiff")


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
) -> tuple[np.ndarray, float | None]:
    """Natural log-normalized values of ``genes`` (of ``X`` or ``layer``): counts and
    unlogged values are normalized to 1e4 per cell first, log2 / log10 values converted;
    a matrix whose kind cannot be told is an error. With their scale: 1e4, or for
    log-normalized values :func:`rnadiff.data._preprocessing.log_scale` over every gene."""
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
    target = PreprocessConfig().target_sum
    values = log_values(X, columns, info.kind, base, target, cell_totals)
    scale = target if info.kind != "lognorm" else log_scale(X, np.arange(X.shape[1]), base)
    return values, scale


def _rescaled(x: np.ndarray, factor: float | None, why: str) -> np.ndarray:
    """``x`` moved by ``factor`` beyond ``SCALE_TOLERANCE``, with a warning saying ``why``."""
    done = "rescaled before scoring, to the metrics' log1p of expression per 10,000 per cell"
    return rescaled(x, factor, tolerance=SCALE_TOLERANCE, why=why, done=done)


def _common_scale(x_pred, x_real, x_ctrl, real_scale, ctrl_scale, pred_scale=None):
    """Every population's log values in the metrics' units, ``ln(1 + x)`` of expression per
    ``target_sum`` (10,000) per cell, as counts are normalized here.

    Log-normalized real or control cells of another scale (counts per million, or the median
    depth of ``sc.pp.normalize_total``; ``*_scale``: measured over all their genes) are
    rescaled to it (by one factor when their scales are within ``SCALE_TOLERANCE`` of each
    other), and predicted cells to the real cells' scale (:func:`_relative_scale`: a
    prediction may hold only some genes), each with a warning when it moves by more than
    ``SCALE_TOLERANCE``: the same cells in counts, log counts per 10,000 or log counts per
    million score the same. ``pred_scale``: the predicted cells' own scale when known
    (rnadiff's outputs record it in ``uns['rnadiff']['scale']``), used instead."""
    target = PreprocessConfig().target_sum
    ratio = real_scale / ctrl_scale if real_scale and ctrl_scale else None
    if ratio and 1 / SCALE_TOLERANCE <= ratio <= SCALE_TOLERANCE:
        # one unit (e.g. the two populations of one file normalized by per-cell size factors,
        # whose medians differ a little): one factor for both, so no change is made up
        ctrl_scale = real_scale

    def why(what: str, scale: float) -> str:
        return (
            f"the {what} cells' log values are of about {scale:.4g} per cell (the inverse of "
            f"the log summed over all their genes), not {target:.4g}"
        )

    if real_scale:  # none: no value to measure it on (all zeros), as it is
        x_real = _rescaled(x_real, target / real_scale, why("real", real_scale))
    if ctrl_scale:
        x_ctrl = _rescaled(x_ctrl, target / ctrl_scale, why("control", ctrl_scale))
    if pred_scale:
        why = (
            f"the predicted cells' log values are of {pred_scale:.4g} per cell "
            f"(uns['rnadiff']['scale']), not {target:.4g}"
        )
        return _rescaled(x_pred, target / pred_scale, why), x_real, x_ctrl
    found = _relative_scale(x_pred, x_real)
    if not found:
        return x_pred, x_real, x_ctrl
    why = (
        f"the predicted cells' expression is about {found:.4g} times the real cells' (median "
        "over the 200 genes most expressed in the real cells)"
    )
    x_pred = _rescaled(x_pred, 1 / found, why)
    return x_pred, x_real, x_ctrl


def _own_scale(adata: ad.AnnData) -> float | None:
    """The scale rnadiff recorded in its output's ``uns['rnadiff']['scale']``, if any."""
    info = adata.uns.get("rnadiff")
    value = info.get("scale") if isinstance(info, dict) else None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None


def _gene_means(x: np.ndarray) -> np.ndarray:
    """Each gene's mean of ``exp(x) - 1`` (the linear expression), a block of cells at a time."""
    total = np.zeros(x.shape[1])
    for i in range(0, len(x), 8192):
        total += np.expm1(x[i : i + 8192].astype(np.float64)).sum(axis=0)
    return total / max(len(x), 1)


def _relative_scale(x: np.ndarray, reference: np.ndarray, n_genes: int = 200) -> float | None:
    """The scale of ``x`` relative to ``reference`` (the same genes): over the ``n_genes``
    genes most expressed in ``reference``, the median of their linear means' ratios, ``c``
    exactly when ``x`` is ``ln(1 + c y)`` of the reference's ``y``; a median over genes, so a
    prediction's errors in a few genes (even extreme values) do not move it."""
    mine, theirs = _gene_means(x), _gene_means(reference)
    top = np.argsort(-theirs)[:n_genes]
    top = top[(theirs[top] > 0) & (mine[top] > 0)]
    return float(np.median(mine[top] / theirs[top])) if len(top) else None


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
        log-normalized values. Both must contain every gene of ``pred``. The metrics use
        ``log1p`` of expression per 1e4 per cell: log values of another scale (e.g. counts per
        million) are rescaled to it, and ``pred`` to the real cells' scale, with a warning
        (:func:`_common_scale`).
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
    x_pred, _ = _log_values(pred, genes, what="pred")
    x_real, real_scale = _log_values(real, genes, what="real", layer=layer)
    x_ctrl, ctrl_scale = _log_values(control, genes, what="control", layer=layer)
    x_pred, x_real, x_ctrl = _common_scale(
        x_pred, x_real, x_ctrl, real_scale, ctrl_scale, _own_scale(pred)
    )
    metrics = response_metrics(
        x_pred, x_real, x_ctrl, top_n=top_n, distributional=distributional, seed=seed
    )
    _warn_no_change(x_real, x_ctrl)
    return pd.Series(metrics, name="value")


def _warn_no_change(x_real: np.ndarray, x_ctrl: np.ndarray, what: str = "the real cells") -> None:
    """Pearson delta is undefined (NaN) when the real cells' mean equals the control cells':
    say so, since it usually means the same cells were given as both."""
    if np.array_equal(x_real.mean(axis=0), x_ctrl.mean(axis=0)):
        logger.warning(
            "rnadiff: %s have the control cells' mean expression (the same cells as both?), "
            "so there is no change to compare with: Pearson delta is NaN; give the perturbed "
            "and the control cells apart (rnadiff evaluate: --real-where, --control-where)",
            what,
        )


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
    x_pred, _ = _log_values(pred, genes, what="pred")
    x_real, real_scale = _log_values(real, genes, what="real", layer=layer)
    x_ctrl, ctrl_scale = _log_values(control, genes, what="control", layer=layer)
    x_pred, x_real, x_ctrl = _common_scale(
        x_pred, x_real, x_ctrl, real_scale, ctrl_scale, _own_scale(pred)
    )
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
