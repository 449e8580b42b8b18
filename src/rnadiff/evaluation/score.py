"""Score predicted cells (AnnData) against real cells: the AnnData edge of the metrics."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from rnadiff.config import PreprocessConfig
from rnadiff.data.preprocessing import detect_input_type, log_normalized_matrix
from rnadiff.data.validation import check_genes, check_matrix
from rnadiff.evaluation.metrics import response_metrics


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


def _log_values(adata: ad.AnnData, genes: list[str], *, what: str) -> np.ndarray:
    """Log-normalized values of ``genes``; counts are normalized to 1e4 per cell first."""
    check_matrix(adata.X, what=f"{what}.X")
    _check_genes(adata.var_names, genes, what=what)
    columns = adata.var_names.get_indexer(genes)
    kind = detect_input_type(adata.X)
    return log_normalized_matrix(adata.X, kind, PreprocessConfig().target_sum, columns)


def score(
    pred: ad.AnnData,
    real: ad.AnnData,
    control: ad.AnnData,
    *,
    top_n: tuple[int, ...] = (20, 100),
    distributional: bool = True,
    seed: int = 0,
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

    Returns
    -------
    pandas.Series
        One value per metric.
    """
    genes = [str(g) for g in pred.var_names]
    _check_genes(real.var_names, genes, what="the real cells")
    _check_genes(control.var_names, genes, what="the control cells")
    x_pred = _log_values(pred, genes, what="pred")
    x_real = _log_values(real, genes, what="real")
    x_ctrl = _log_values(control, genes, what="control")
    metrics = response_metrics(
        x_pred, x_real, x_ctrl, top_n=top_n, distributional=distributional, seed=seed
    )
    return pd.Series(metrics, name="value")
