"""Preprocessing: what the input holds, which genes are modelled, and the model's gene scale.

The model works on ``ln(1 + x)`` of counts normalized to ``target_sum`` per cell (log-normalized
input is converted to natural log and used as it is), each modelled gene centred and scaled.
Everything needed to repeat it on new data lives in :class:`PreprocessState`, stored in every
checkpoint. Statistics are gathered in streaming passes over blocks of cells
(:mod:`rnadiff.data._genes`), so the whole matrix is never densified.

Which genes are modelled (:func:`select_model_genes`): an explicit list, else the genes flagged
in ``var['highly_variable']``, else every gene with a count, up to ``n_top_genes``; above that,
the most variable by analytic Pearson residuals (which keep strongly expressed responders).
Genes left out are not lost: outputs carry every input gene (:mod:`rnadiff.model._output`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from rnadiff._config import PreprocessConfig
from rnadiff._errors import InputError
from rnadiff.data._expression import Source, columns, detect, matrix
from rnadiff.data._genes import gene_moments, iter_row_chunks, pearson_residual_variance
from rnadiff.data._inputs import LOG_BASES, InputInfo, detect_input, sample_rows
from rnadiff.data._validation import check_matrix, check_unique_names

logger = logging.getLogger("rnadiff")

InputType = str  # "counts", "normalized" or "lognorm"
_BASE_NAMES = {"e": "natural log", 2: "log2", 10: "log10"}


def describe_input(input_type: str, target_sum: float, log_base="e") -> str:
    return {
        "counts": f"raw counts: normalized to {target_sum:g} per cell, then log1p",
        "normalized": f"normalized unlogged values: rescaled to {target_sum:g} per cell, log1p",
        "lognorm": f"log-normalized values ({_BASE_NAMES.get(log_base, log_base)}): "
        + ("used as they are" if log_base == "e" else "converted to natural log"),
    }[input_type]


@dataclass(frozen=True)
class PreprocessState:
    """What preprocessing learned from training cells, to repeat it exactly on new data."""

    input_type: InputType
    target_sum: float
    genes: tuple[str, ...]  # the modelled genes, in model order
    mean: np.ndarray  # per-gene mean of log values (training cells)
    std: np.ndarray  # per-gene scale of log values (1 for scaling="center")
    n_input_genes: int  # genes of the training matrix used for size factors
    # raw counts input only (None otherwise): the training cells' median total counts and each
    # model gene's mean expression per target_sum counts, for the counting noise of a cell
    depth: float | None = None
    expr_mean: np.ndarray | None = None
    log_base: str | int = "e"  # log-normalized input: the base it came in
    input_genes: tuple[str, ...] | None = None  # every gene of the training data (outputs)
    selection: str = "all"  # how the modelled genes were chosen
    # log-normalized input only (None otherwise): the training cells' scale, the median of
    # each cell's inverse-log values summed over every input gene / over the modelled genes
    # (1e4 for log1p of counts per 10,000), to bring new data of another scale to it
    log_total: float | None = None
    log_total_modelled: float | None = None

    def to_json(self) -> dict:
        return {
            "input_type": self.input_type,
            "target_sum": self.target_sum,
            "genes": list(self.genes),
            "n_input_genes": self.n_input_genes,
            "depth": self.depth,
            "log_base": self.log_base,
            "input_genes": None if self.input_genes is None else list(self.input_genes),
            "selection": self.selection,
            "log_total": self.log_total,
            "log_total_modelled": self.log_total_modelled,
        }

    @classmethod
    def from_json(
        cls, d: dict, mean: np.ndarray, std: np.ndarray, expr_mean: np.ndarray | None = None
    ) -> PreprocessState:
        genes = d.get("input_genes")
        return cls(
            d["input_type"],
            d["target_sum"],
            tuple(d["genes"]),
            mean,
            std,
            d["n_input_genes"],
            d.get("depth"),
            expr_mean,
            d.get("log_base", "e"),
            None if genes is None else tuple(genes),
            d.get("selection", "highly_variable_genes"),
            d.get("log_total"),
            d.get("log_total_modelled"),
        )

    @property
    def description(self) -> str:
        return describe_input(self.input_type, self.target_sum, self.log_base)

    @property
    def scale(self) -> float | None:
        """The expression per cell that log values are ``log1p`` of: ``target_sum`` for
        counts and normalized input, the training data's :attr:`log_total` for
        log-normalized input (None when unknown: models saved before 2026-12-08)."""
        return self.log_total if self.input_type == "lognorm" else float(self.target_sum)

    @property
    def all_genes(self) -> tuple[str, ...]:
        """Every gene outputs carry: the training data's genes (the modelled ones if unknown)."""
        return self.genes if self.input_genes is None else self.input_genes


def resolve_input(info: InputInfo, declared: str, what: str) -> tuple[str, str | int]:
    """``(input_type, log_base)`` from the detection ``info`` or the ``declared`` input."""
    if declared == "auto":
        if info.ambiguous is not None:
            raise InputError(f"cannot tell what {what} holds: {info.ambiguous}")
        logger.info("rnadiff: %s: %s", what, info.description)
        return info.kind, info.log_base or "e"
    if declared in LOG_BASES:
        return "lognorm", LOG_BASES[declared]
    return declared, "e"


def _check_declared(info: InputInfo, input_type: str, log_base, what: str) -> None:
    """A declared input must be possible: counts are integers, logs are below 30."""
    if input_type == "counts" and info.n_noninteger > 0.01 * max(info.n_values, 1):
        raise InputError(
            f"input='counts' but {what} holds non-integer values ({info.n_noninteger} in a "
            "sample), not raw counts; pass input='lognorm' (or 'log2', 'log10', 'normalized') "
            "for other values"
        )
    if input_type == "lognorm" and info.max_value >= 30:
        raise InputError(
            f"input={'lognorm' if log_base == 'e' else f'log{log_base}'!r} but {what} has "
            f"values up to {info.max_value:.3g} (30 or more); is it logged?"
        )


def totals(M, *, chunk_size: int = 10000) -> np.ndarray:
    """Each cell's total over all genes (its depth, for counts), as float64."""
    out = np.zeros(M.shape[0])
    for rows, chunk in iter_row_chunks(M, chunk_size=chunk_size):
        out[rows] = np.asarray(chunk.sum(axis=1), dtype=np.float64).ravel()
    return out


total_counts = totals  # the name callers of earlier versions use


def log_values(
    M, cols: np.ndarray, input_type: str, log_base, target_sum: float, cell_totals, *, chunk=8192
) -> np.ndarray:
    """Dense float32 natural log-normalized values of columns ``cols`` of ``M``, read a block
    of cells at a time (size factors from ``cell_totals``, over all of ``M``'s genes)."""
    out = np.empty((M.shape[0], len(cols)), dtype=np.float32)
    factor = np.log(np.e if log_base == "e" else float(log_base))
    for rows, block in iter_row_chunks(M, chunk_size=chunk):
        sub = block[:, cols]
        dense = np.asarray(sub.toarray() if sp.issparse(sub) else sub, dtype=np.float64)
        if input_type == "lognorm":
            out[rows] = dense * factor
        else:
            out[rows] = np.log1p(dense * (target_sum / cell_totals[rows])[:, None])
    return out


class _View:
    """Columns ``cols`` of ``M`` as a row-sliceable matrix of ``transform(dense block, rows)``
    (for the streaming statistics of :mod:`rnadiff.data._genes`)."""

    def __init__(self, M, cols: np.ndarray, transform=None):
        self.M, self.cols, self.transform = M, cols, transform
        self.shape = (M.shape[0], len(cols))

    def __getitem__(self, rows):
        sub = self.M[rows][:, self.cols]
        if self.transform is None:
            return sub
        dense = np.asarray(sub.toarray() if sp.issparse(sub) else sub, dtype=np.float64)
        return self.transform(dense, rows)


def _normalizer(input_type: str, log_base, target_sum: float, cell_totals, *, log: bool):
    """``transform(block, rows)``: normalized values per ``target_sum`` (natural log1p of them
    with ``log``)."""
    factor = np.log(np.e if log_base == "e" else float(log_base))

    def transform(block: np.ndarray, rows) -> np.ndarray:
        if input_type == "lognorm":
            return block * factor if log else np.expm1(block * factor)
        x = block * (target_sum / cell_totals[rows])[:, None]
        return np.log1p(x) if log else x

    return transform


def select_model_genes(
    input_genes: pd.Index,
    *,
    var: pd.DataFrame,
    config: PreprocessConfig,
    expressed: np.ndarray,
    variance: callable,
    n_cells: int,
) -> tuple[np.ndarray, str]:
    """Positions (in ``input_genes``) of the modelled genes and how they were chosen.

    ``expressed``: genes with any value in the training cells; ``variance(candidates)``:
    the Pearson residual variance of candidate genes (computed only when needed).
    """
    n_top = config.gene_budget(n_cells)
    if config.genes is not None:
        wanted = list(config.genes)
        pos = input_genes.get_indexer(wanted)
        if (pos < 0).any():
            missing = [g for g, p in zip(wanted, pos, strict=True) if p < 0]
            raise InputError(f"genes=: {len(missing)} genes are not in the data: {missing[:10]}")
        return np.sort(np.unique(pos)), "given"
    flagged = var.get("highly_variable")
    use_hv = config.use_highly_variable
    if use_hv is None:
        use_hv = flagged is not None and flagged.dtype == bool and bool(flagged.any())
    if use_hv:
        if flagged is None or not bool(np.asarray(flagged, dtype=bool).any()):
            raise InputError("use_highly_variable=True but var['highly_variable'] flags no gene")
        return np.flatnonzero(np.asarray(flagged, dtype=bool)), "highly_variable"
    candidates = np.flatnonzero(expressed)
    if not len(candidates):
        raise InputError("no gene has a non-zero value in the training cells")
    if n_top is None or len(candidates) <= n_top:
        return candidates, "all"
    score = variance(candidates)
    top = candidates[np.argsort(-score, kind="stable")[:n_top]]
    return np.sort(top), "pearson_residuals"


def fit_preprocessing(
    adata: ad.AnnData,
    *,
    config: PreprocessConfig,
    layer: str | None = None,
    use_raw: bool = False,
) -> PreprocessState:
    """Learn the preprocessing from the training cells ``adata`` (streaming over cells).

    Parameters
    ----------
    adata
        Training cells; only these decide the modelled genes and gene scales.
    config
        Preprocessing options.
    layer, use_raw
        Where expression is read (default ``X``).

    Returns
    -------
    PreprocessState
    """
    source = Source(layer=layer, use_raw=use_raw)
    M, names = matrix(adata, source)
    what = source.what
    check_unique_names(adata.var_names, what="gene names (var_names)")
    check_unique_names(names, what=f"gene names of {what}")
    check_matrix(M, what=what)
    info = detect(adata, source)
    input_type, log_base = resolve_input(info, config.input, what)
    if config.input != "auto":
        _check_declared(info, input_type, log_base, what)
    input_genes = pd.Index(adata.var_names)
    cols = columns(names, input_genes, what)
    cell_totals = totals(M)
    if input_type != "lognorm" and (cell_totals == 0).any():
        raise InputError(
            f"{int((cell_totals == 0).sum())} cells have no counts at all in {what}; remove them"
        )
    gene_sums = np.zeros(M.shape[1])
    for _, chunk in iter_row_chunks(M):
        gene_sums += np.asarray(chunk.sum(axis=0), dtype=np.float64).ravel()
    expressed = gene_sums[cols] > 0

    def variance(candidates: np.ndarray) -> np.ndarray:
        linear = None  # counts: the residuals of the counts themselves
        if input_type != "counts":
            # other values as counts per target_sum (the scale of UMI counts per cell)
            linear = _normalizer(input_type, log_base, config.target_sum, cell_totals, log=False)
        return pearson_residual_variance(_View(M, cols[candidates], linear))

    idx, selection = select_model_genes(
        input_genes,
        var=adata.var,
        config=config,
        expressed=expressed,
        variance=variance,
        n_cells=adata.n_obs,
    )
    left = len(input_genes) - len(idx)
    logger.info(
        "rnadiff: modelling %d of %d genes (%s)%s",
        len(idx),
        len(input_genes),
        {
            "all": "every gene with a count",
            "given": "genes=",
            "highly_variable": "var['highly_variable']",
            "pearson_residuals": f"the {len(idx)} most variable by Pearson residuals, "
            f"n_top_genes={config.n_top_genes}, genes_per_cell={config.genes_per_cell}",
        }[selection],
        f"; the other {left} pass through to outputs unmodelled" if left else "",
    )
    norm = {"target_sum": config.target_sum, "cell_totals": cell_totals}
    log_view = _View(M, cols[idx], _normalizer(input_type, log_base, log=True, **norm))
    mean, var = gene_moments(log_view)
    if config.scaling == "zscore":
        std = np.maximum(np.sqrt(var), config.min_std)
    else:
        std = np.ones_like(mean)
    depth = expr_mean = log_total = log_total_modelled = None
    if input_type == "lognorm":
        log_total = log_scale(M, cols, log_base)
        log_total_modelled = log_scale(M, cols[idx], log_base)
    if input_type == "counts":
        depth = float(np.median(cell_totals))
        linear = _View(M, cols[idx], _normalizer(input_type, log_base, log=False, **norm))
        expr_mean = gene_moments(linear)[0].astype(np.float32)
    return PreprocessState(
        input_type,
        config.target_sum,
        tuple(str(g) for g in input_genes[idx]),
        mean.astype(np.float32),
        std.astype(np.float32),
        M.shape[1],
        depth,
        expr_mean,
        log_base,
        tuple(str(g) for g in input_genes),
        selection,
        log_total,
        log_total_modelled,
    )


def check_compatible(info: InputInfo, state: PreprocessState, what: str) -> tuple[str, object]:
    """How to read new data given what it holds (``info``) and what training held: returns
    ``(input_type, log_base)``; conflicting kinds are an error."""
    if info.ambiguous is not None:  # undecidable alone: read it as the training data was
        return state.input_type, state.log_base
    kind = info.kind
    if state.input_type == "lognorm":
        if kind == "lognorm":
            return "lognorm", info.log_base or "e"
        found = "raw counts (integers)" if kind == "counts" else "normalized unlogged values"
        raise InputError(
            f"the model was trained on log-normalized values but {what} holds {found}; pass "
            "log-normalized values (log1p of normalized counts), or the layer that holds them "
            "(layer=...)"
        )
    if kind == "lognorm":
        trained = {"counts": "raw counts", "normalized": "normalized unlogged values (TPM, CPM)"}
        trained = trained.get(state.input_type, state.input_type)
        raise InputError(
            f"the model was trained on {trained} but {what} looks log-normalized (non-integers "
            f"below 30); pass {trained}, or the layer that holds them (layer=...)"
        )
    return state.input_type, "e"


def log_expression(
    adata: ad.AnnData,
    state: PreprocessState,
    *,
    layer: str | None = None,
    use_raw: bool = False,
    genes: Sequence[str] | None = None,
) -> np.ndarray:
    """Natural log-normalized values of ``genes`` (default: the modelled genes) for new
    cells, as in training (float32, cells x genes)."""
    source = Source(layer=layer, use_raw=use_raw)
    M, names = matrix(adata, source)
    what = "the data" if source.layer is None and not use_raw else source.what
    check_matrix(M, what=source.what)
    check_unique_names(names, what="gene names (var_names)")
    genes = state.genes if genes is None else genes
    cols = columns(names, genes, what)
    input_type, log_base = check_compatible(detect(adata, source), state, what)
    cell_totals = None
    if input_type != "lognorm":
        cell_totals = totals(M)
        if (cell_totals == 0).any():
            raise InputError(f"{int((cell_totals == 0).sum())} cells have no counts at all")
        if M.shape[1] != state.n_input_genes:
            logger.warning(
                "size factors use %d genes here but %d in training; expression levels may shift",
                M.shape[1],
                state.n_input_genes,
            )
    out = log_values(M, cols, input_type, log_base, state.target_sum, cell_totals)
    if input_type == "lognorm":
        out = _to_training_scale(out, M, names, state, log_base, what)
    return out


SCALE_TOLERANCE = 1.25  # scoring: populations whose log scales differ by more are rescaled
# new cells given to a model: a subset of cells (one cell type, a condition) of data normalized
# by per-cell size factors can sit well off the training median, so only a clear difference of
# units (counts per 10,000 against per million, or against a data set's median depth) counts
MODEL_SCALE_TOLERANCE = 2.0


def log_scale(M, cols, log_base, *, sample_cells: int = 2000, seed: int = 0) -> float | None:
    """The scale of log-normalized values: over a seeded sample of cells, the median of each
    cell's inverse-log values ``b**v - 1`` summed over columns ``cols`` (1e4 for ``log1p`` of
    counts per 10,000 and every gene; None when no sampled cell has a value there)."""
    sample = sample_rows(M, sample_cells=sample_cells, seed=seed)[:, np.asarray(cols)]
    factor = np.log(np.e if log_base == "e" else float(log_base))
    inverse = sample.astype(np.float64)
    inverse.data = np.expm1(inverse.data * factor)
    cell = np.asarray(inverse.sum(axis=1)).ravel()
    cell = cell[cell > 0]
    return float(np.median(cell)) if len(cell) else None


def rescale_log(values: np.ndarray, factor: float) -> np.ndarray:
    """Natural log values ``ln(1 + x)`` as ``ln(1 + factor x)`` (float32)."""
    return np.log1p(np.expm1(values.astype(np.float64)) * factor).astype(np.float32)


def rescaled(values: np.ndarray, factor: float | None, *, tolerance: float, why: str, done: str):
    """``values`` (``ln(1 + x)``) as ``ln(1 + factor x)`` when ``factor`` is beyond
    ``tolerance`` either way, with the warning ``rnadiff: {why}: {done} (x factor)``; as they
    are otherwise (also without a finite factor)."""
    if not factor or not np.isfinite(factor) or 1 / tolerance <= factor <= tolerance:
        return values
    logger.warning("rnadiff: %s: %s (x %.4g)", why, done, factor)
    return rescale_log(values, factor)


def _to_training_scale(values, M, names, state: PreprocessState, log_base, what: str):
    """Log-normalized ``values`` of new cells brought to the training cells' scale when theirs
    differs by more than :data:`MODEL_SCALE_TOLERANCE` (e.g. log1p of counts per million given to a
    model trained on counts per 10,000), with a warning; as they are otherwise. The scales are
    compared over every training gene when the data hold them all, else over the modelled
    genes (models saved before 2026-12-08 have no scale and are not checked)."""
    every = state.input_genes is not None and set(state.input_genes) <= set(names)
    reference = state.log_total if every else state.log_total_modelled
    if not reference:
        return values
    genes = state.input_genes if every else state.genes
    found = log_scale(M, columns(names, genes, what), log_base)
    over = "the training genes" if every else "the modelled genes"
    return rescaled(
        values,
        reference / found if found else None,
        tolerance=MODEL_SCALE_TOLERANCE,
        why=f"{what} holds log values of about {found or 0:.4g} per cell (inverse of the log "
        f"summed over {over}), the model's training data {reference:.4g}",
        done="rescaled to the model's scale; normalize both alike to silence this",
    )


def detect_input_type(X) -> str:
    """``"counts"``, ``"normalized"`` or ``"lognorm"``: what :func:`detect_input` finds."""
    return detect_input(X).kind


def log_normalized_matrix(X, input_type: str, target_sum: float, columns=None) -> np.ndarray:
    """Dense float32 log1p(normalized) values of ``columns`` (size factors use all genes);
    log-normalized input is converted to natural log (its base detected)."""
    cols = np.arange(X.shape[1]) if columns is None else np.asarray(columns)
    base = detect_input(X).log_base or "e" if input_type == "lognorm" else "e"
    cell_totals = None if input_type == "lognorm" else totals(X)
    if cell_totals is not None and (cell_totals == 0).any():
        n_empty = int((cell_totals == 0).sum())
        raise InputError(f"{n_empty} cells have no counts at all; remove them")
    return log_values(X, cols, input_type, base, target_sum, cell_totals)


def scale(log_x: np.ndarray, state: PreprocessState) -> np.ndarray:
    """Log values -> the model's space (per-gene centering and scaling)."""
    return ((log_x - state.mean) / state.std).astype(np.float32)


def unscale(z: np.ndarray, state: PreprocessState) -> np.ndarray:
    """The model's space -> log values, clipped at 0 (log1p of a non-negative value)."""
    return np.clip(z * state.std + state.mean, 0, None).astype(np.float32)


def expression_matrix(adata: ad.AnnData, layer: str | None):
    """``adata.X``, or the layer ``layer`` (with a clear error when it does not exist)."""
    return matrix(adata, Source(layer=layer))[0]


def gene_positions(var_names: Sequence[str], genes: Sequence[str]) -> np.ndarray:
    """Positions of ``genes`` in ``var_names``; an unknown gene is an error."""
    index = pd.Index(var_names)
    pos = index.get_indexer(list(genes))
    if (pos < 0).any():
        bad = [g for g, p in zip(genes, pos, strict=True) if p < 0]
        raise InputError(f"unknown genes {bad[:10]}; they are not among the model's genes")
    return pos
