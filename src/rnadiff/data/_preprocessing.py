"""Preprocessing: input detection, normalization + log1p, highly variable genes, gene scaling.

Everything needed to repeat the preprocessing on new data lives in :class:`PreprocessState`,
which is stored in every checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from rnadiff._config import PreprocessConfig
from rnadiff._errors import InputError
from rnadiff.data._validation import (
    check_genes,
    check_matrix,
    check_unique_names,
    is_integer_valued,
)

logger = logging.getLogger("rnadiff.preprocessing")

InputType = Literal["counts", "normalized", "lognorm"]
_LOGNORM_MAX = 30.0  # log1p of 1e4-normalized data stays far below this; FPKM or TPM do not


def detect_input_type(X) -> InputType:
    """Say what a non-negative expression matrix holds.

    Integers are ``"counts"``; non-integers whose maximum stays below 30 are log-normalized
    (``"lognorm"``); larger non-integers are normalized but not logged (``"normalized"``: FPKM,
    TPM, CPM).
    """
    if is_integer_valued(X):
        return "counts"
    values = X.data if sp.issparse(X) else np.asarray(X)
    return "lognorm" if values.max(initial=0) < _LOGNORM_MAX else "normalized"


def _log_like(X) -> bool:
    """Whether values can be log1p of normalized expression: all below 30 (integers or not)."""
    values = X.data if sp.issparse(X) else np.asarray(X)
    return bool(values.max(initial=0) < _LOGNORM_MAX)


def describe_input(input_type: InputType, target_sum: float) -> str:
    return {
        "counts": f"raw counts (integers): normalized to {target_sum:g} per cell, then log1p",
        "normalized": f"normalized unlogged values: rescaled to {target_sum:g} per cell, log1p",
        "lognorm": "log-normalized values (non-integers below 30): used as they are",
    }[input_type]


def total_counts(X) -> np.ndarray:
    """Each cell's total over all genes (its depth, for counts), as float64."""
    return np.asarray(X.sum(axis=1)).ravel().astype(np.float64)


def log_normalized_matrix(X, input_type: InputType, target_sum: float, columns=None) -> np.ndarray:
    """Dense float32 log1p(normalized) values of ``columns`` (size factors use all genes)."""
    if input_type == "lognorm":
        sub = X if columns is None else X[:, columns]
        return np.asarray(sub.toarray() if sp.issparse(sub) else sub, dtype=np.float32)
    totals = total_counts(X)
    if (totals == 0).any():
        raise InputError(f"{int((totals == 0).sum())} cells have no counts at all; remove them")
    sub = X if columns is None else X[:, columns]
    dense = np.asarray(sub.toarray() if sp.issparse(sub) else sub, dtype=np.float64)
    return np.log1p(dense * (target_sum / totals)[:, None]).astype(np.float32)


def highly_variable_genes(log_x: np.ndarray, n_top: int, *, n_bins: int = 20) -> np.ndarray:
    """Indices of the ``n_top`` most variable genes, Seurat flavor (Satija et al. 2015).

    Dispersion (variance / mean of ``expm1`` values) is z-scored within bins of mean expression,
    so that highly expressed genes do not win by their mean alone. Returned in gene order.
    """
    n_genes = log_x.shape[1]
    if n_top >= n_genes:
        return np.arange(n_genes)
    x = np.expm1(log_x.astype(np.float64))
    mean = x.mean(axis=0)
    var = x.var(axis=0, ddof=1)
    mean[mean == 0] = 1e-12
    with np.errstate(divide="ignore"):
        dispersion = np.log(var / mean)
    dispersion[~np.isfinite(dispersion)] = np.nan
    frame = pd.DataFrame({"bin": pd.cut(np.log1p(mean), n_bins), "disp": dispersion})
    grouped = frame.groupby("bin", observed=True)["disp"]
    bin_mean = grouped.transform("mean").to_numpy()
    bin_std = grouped.transform("std").to_numpy()
    single = ~np.isfinite(bin_std)  # one-gene bins: Seurat sets these to a normalized 1
    bin_std[single], bin_mean[single] = bin_mean[single], 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        score = (dispersion - bin_mean) / bin_std
    score = np.where(np.isfinite(score), score, -np.inf)
    top = np.argsort(-score, kind="stable")[:n_top]
    return np.sort(top)


@dataclass(frozen=True)
class PreprocessState:
    """What preprocessing learned from training cells, to repeat it exactly on new data."""

    input_type: InputType
    target_sum: float
    genes: tuple[str, ...]  # the model's genes, in model order
    mean: np.ndarray  # per-gene mean of log values (training cells)
    std: np.ndarray  # per-gene scale of log values (1 for scaling="center")
    n_input_genes: int  # genes of the training data used for size factors
    # raw counts input only (None otherwise): the training cells' median total counts and each
    # model gene's mean expression per target_sum counts, for the counting noise of a cell
    depth: float | None = None
    expr_mean: np.ndarray | None = None

    def to_json(self) -> dict:
        return {
            "input_type": self.input_type,
            "target_sum": self.target_sum,
            "genes": list(self.genes),
            "n_input_genes": self.n_input_genes,
            "depth": self.depth,
        }

    @classmethod
    def from_json(
        cls, d: dict, mean: np.ndarray, std: np.ndarray, expr_mean: np.ndarray | None = None
    ) -> PreprocessState:
        return cls(
            d["input_type"],
            d["target_sum"],
            tuple(d["genes"]),
            mean,
            std,
            d["n_input_genes"],
            d.get("depth"),
            expr_mean,
        )

    @property
    def description(self) -> str:
        return describe_input(self.input_type, self.target_sum)


def expression_matrix(adata: ad.AnnData, layer: str | None):
    """``adata.X``, or the layer ``layer`` (with a clear error when it does not exist)."""
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        raise InputError(f"layer {layer!r} not found; layers: {list(adata.layers.keys())}")
    return adata.layers[layer]


def fit_preprocessing(
    adata: ad.AnnData, *, config: PreprocessConfig, layer: str | None = None
) -> PreprocessState:
    """Learn the preprocessing from the training cells ``adata``.

    Parameters
    ----------
    adata
        Training cells; only these decide the highly variable genes and gene scales.
    config
        Preprocessing options.
    layer
        Layer holding the expression values (``None``: ``adata.X``).

    Returns
    -------
    PreprocessState
    """
    X = expression_matrix(adata, layer)
    check_unique_names(adata.var_names, what="gene names (var_names)")
    what = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    check_matrix(X, what=what, require_counts=config.input == "counts")
    detected = detect_input_type(X)
    input_type = detected if config.input == "auto" else config.input
    if config.input == "lognorm" and not _log_like(X):
        raise InputError(f"input='lognorm' but {what} has values up to 30 or more; is it logged?")
    logger.info("rnadiff: %s holds %s", what, describe_input(input_type, config.target_sum))
    log_x = log_normalized_matrix(X, input_type, config.target_sum)
    n_top = config.n_top_genes or log_x.shape[1]
    idx = highly_variable_genes(log_x, n_top)
    sel = log_x[:, idx]
    mean = sel.mean(axis=0)
    if config.scaling == "zscore":
        std = np.maximum(sel.std(axis=0), config.min_std)
    else:
        std = np.ones_like(mean)
    genes = tuple(str(g) for g in adata.var_names[idx])
    depth = expr_mean = None
    if input_type == "counts":
        depth = float(np.median(total_counts(X)))
        expr_mean = np.expm1(sel.astype(np.float64)).mean(axis=0).astype(np.float32)
    return PreprocessState(
        input_type,
        config.target_sum,
        genes,
        mean.astype(np.float32),
        std.astype(np.float32),
        adata.n_vars,
        depth,
        expr_mean,
    )


def log_expression(adata: ad.AnnData, state: PreprocessState, *, layer: str | None = None):
    """Log-normalized values of the model's genes for new cells, as in training."""
    X = expression_matrix(adata, layer)
    check_matrix(X, what="adata.X" if layer is None else f"adata.layers[{layer!r}]")
    check_unique_names(adata.var_names, what="gene names (var_names)")
    check_genes(adata.var_names, state.genes, what="the data")
    detected = detect_input_type(X)
    if state.input_type != "lognorm" and detected == "lognorm":
        raise InputError(
            "the model was trained on counts but this data looks log-normalized (non-integers "
            "below 30); pass raw counts, or the layer that holds them"
        )
    if state.input_type == "lognorm" and not _log_like(X):
        found = "raw counts (integers)" if detected == "counts" else "normalized unlogged values"
        raise InputError(
            "the model was trained on log-normalized values but this data looks like "
            f"{found}, with values up to 30 or more; pass log-normalized values (log1p of "
            "normalized counts), or the layer that holds them"
        )
    if state.input_type == "lognorm" and detected == "counts":
        logger.warning(
            "the model was trained on log-normalized values but this data are integers (all "
            "below 30, so taken as log values); pass log-normalized values if they are counts"
        )
    if state.input_type != "lognorm" and adata.n_vars != state.n_input_genes:
        logger.warning(
            "size factors use %d genes here but %d in training; expression levels may shift",
            adata.n_vars,
            state.n_input_genes,
        )
    columns = adata.var_names.get_indexer(list(state.genes))
    return log_normalized_matrix(X, state.input_type, state.target_sum, columns)


def scale(log_x: np.ndarray, state: PreprocessState) -> np.ndarray:
    """Log values -> the model's space (per-gene centering and scaling)."""
    return ((log_x - state.mean) / state.std).astype(np.float32)


def unscale(z: np.ndarray, state: PreprocessState) -> np.ndarray:
    """The model's space -> log values, clipped at 0 (log1p of a non-negative value)."""
    return np.clip(z * state.std + state.mean, 0, None).astype(np.float32)


def prepare_anndata(
    adata: ad.AnnData, *, config: PreprocessConfig | None = None, layer: str | None = None
) -> ad.AnnData:
    """Return a preprocessed copy of ``adata``: the user's object is left untouched.

    Returns
    -------
    AnnData
        A copy restricted to the highly variable genes, with ``X`` log-normalized,
        ``layers['counts']`` the raw counts (when the input had counts),
        ``var['rnadiff_mean']``/``var['rnadiff_std']`` the gene scales, and
        ``uns['rnadiff_preprocessing']`` the state needed to repeat it.
    """
    config = config or PreprocessConfig()
    state = fit_preprocessing(adata, config=config, layer=layer)
    out = adata[:, list(state.genes)].copy()
    raw = expression_matrix(adata, layer)
    if state.input_type == "counts":
        out.layers["counts"] = raw[:, adata.var_names.get_indexer(list(state.genes))].copy()
    out.X = log_expression(adata, state, layer=layer)
    out.var["rnadiff_mean"], out.var["rnadiff_std"] = state.mean, state.std
    out.uns["rnadiff_preprocessing"] = state.to_json()
    return out


def gene_positions(var_names: Sequence[str], genes: Sequence[str]) -> np.ndarray:
    """Positions of ``genes`` in ``var_names``; an unknown gene is an error."""
    index = pd.Index(var_names)
    pos = index.get_indexer(list(genes))
    if (pos < 0).any():
        bad = [g for g, p in zip(genes, pos, strict=True) if p < 0]
        raise InputError(f"unknown genes {bad[:10]}; they are not among the model's genes")
    return pos
