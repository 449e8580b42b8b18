"""Gene selection on counts, computed in streaming passes over blocks of cells.

The matrix may be dense, scipy sparse or a backed AnnData matrix: it is read ``chunk_size``
rows at a time, and at most ``max_elements`` values are ever dense at once, so selection works
on more cells than fit in memory.

Analytic Pearson residuals (Lause, Berens & Kobak 2021, Genome Biology, eq. 2-3) rank a gene by
how far its counts stray from a shared negative binomial null with the cell's depth; unlike
dispersion z-scored within mean bins, they keep strongly expressed genes that respond.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

import numpy as np
import scipy.sparse as sp

Method = Literal["pearson_residuals"]
Transform = Callable[[np.ndarray, slice], np.ndarray]

_MAX_ELEMENTS = 2**22  # values densified at once: 32 MiB of float64


def iter_row_chunks(X, *, chunk_size: int = 10000) -> Iterator[tuple[slice, object]]:
    """Successive blocks of ``chunk_size`` rows of ``X``, as ``X`` gives them (sparse or dense).

    Yields ``(rows, block)`` with ``rows`` the slice of cells the block covers.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    n_cells = X.shape[0]
    for start in range(0, n_cells, chunk_size):
        rows = slice(start, min(start + chunk_size, n_cells))
        yield rows, widen_half(X[rows])


def widen_half(block):
    """A dense block of half floats (float16) as float32 (scipy.sparse and most of numpy's
    linear algebra have no float16); any other block as it is."""
    if not sp.issparse(block) and getattr(block, "dtype", None) == np.float16:
        return np.asarray(block, dtype=np.float32)
    return block


def iter_dense_blocks(
    X, *, chunk_size: int = 10000, max_elements: int = _MAX_ELEMENTS
) -> Iterator[tuple[slice, np.ndarray]]:
    """Successive row blocks of ``X`` as dense float64 arrays of at most ``max_elements`` values.

    Rows are read ``chunk_size`` at a time and densified a few at a time; each yielded array
    is a fresh copy that the caller may change in place.
    """
    step = max(1, max_elements // max(1, X.shape[1]))
    for rows, chunk in iter_row_chunks(X, chunk_size=chunk_size):
        for start in range(0, rows.stop - rows.start, step):
            part = chunk[start : start + step]
            dense = part.toarray() if sp.issparse(part) else np.array(part)
            stop = rows.start + start + dense.shape[0]
            yield slice(rows.start + start, stop), dense.astype(np.float64, copy=False)


def cell_and_gene_totals(X, *, chunk_size: int = 10000) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell and per-gene sums of ``X`` in one pass over row chunks, as float64."""
    cells = np.zeros(X.shape[0])
    genes = np.zeros(X.shape[1])
    for rows, chunk in iter_row_chunks(X, chunk_size=chunk_size):
        cells[rows] = np.asarray(chunk.sum(axis=1), dtype=np.float64).ravel()
        genes += np.asarray(chunk.sum(axis=0), dtype=np.float64).ravel()
    return cells, genes


def gene_moments(
    X,
    transform: Transform | None = None,
    *,
    chunk_size: int = 10000,
    ddof: int = 0,
    max_elements: int = _MAX_ELEMENTS,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of every gene of ``transform(X)``, in one streaming pass.

    Block statistics are merged with Chan et al.'s pairwise update (1979), in float64, so the
    result does not depend on the block size beyond rounding.

    Parameters
    ----------
    X
        Cells x genes: dense, scipy sparse or a backed AnnData matrix.
    transform
        ``transform(block, rows)``: values of a dense float64 block of cells (which it may
        change in place) and the slice of cells it covers, so that per-cell factors can be
        applied; returns an array of the same shape. ``None``: the values themselves.
    chunk_size
        Rows read at once.
    ddof
        Delta degrees of freedom of the variance (0: population variance).
    max_elements
        Most values densified at once.

    Returns
    -------
    mean, var
        float64 arrays of length ``n_genes``.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.arange(12.0).reshape(4, 3)
    >>> mean, var = gene_moments(X, lambda x, rows: np.log1p(x), chunk_size=3)
    >>> bool(np.allclose(var, np.log1p(X).var(axis=0)))
    True
    """
    n_genes = X.shape[1]
    count, mean, m2 = 0, np.zeros(n_genes), np.zeros(n_genes)
    for rows, block in iter_dense_blocks(X, chunk_size=chunk_size, max_elements=max_elements):
        values = block if transform is None else np.asarray(transform(block, rows), np.float64)
        n_b = values.shape[0]
        mean_b = values.mean(axis=0)
        m2_b = ((values - mean_b) ** 2).sum(axis=0)
        total = count + n_b
        delta = mean_b - mean
        mean = mean + delta * (n_b / total)
        m2 = m2 + m2_b + delta**2 * (count * n_b / total)
        count = total
    if count - ddof <= 0:
        return mean, np.full(n_genes, np.nan)
    return mean, m2 / (count - ddof)


def pearson_residual_variance(
    X,
    *,
    theta: float = 100.0,
    clip: float | None = None,
    chunk_size: int = 10000,
    max_elements: int = _MAX_ELEMENTS,
) -> np.ndarray:
    """Variance of each gene's clipped analytic Pearson residuals (Lause et al. 2021, eq. 3).

    ``mu = n_c p_g`` (cell total times the gene's share of all counts) and the residual is
    ``(x - mu) / sqrt(mu + mu**2 / theta)``, clipped to ``[-clip, clip]``. Two passes over row
    chunks: totals, then residual moments. As scanpy's
    ``experimental.pp.highly_variable_genes(flavor="pearson_residuals")`` without batches.

    Parameters
    ----------
    X
        Raw counts, cells x genes: dense, scipy sparse or a backed AnnData matrix.
    theta
        Negative binomial overdispersion shared by all genes (100: nearly Poisson).
    clip
        Residuals are clipped to ``[-clip, clip]``; ``None``: ``sqrt(n_cells)``.
    chunk_size
        Rows read at once.
    max_elements
        Most values densified at once.

    Returns
    -------
    np.ndarray
        float64, one per gene (population variance); 0 for genes with no counts.
    """
    if theta <= 0:
        raise ValueError(f"theta must be positive, got {theta}")
    n_cells = X.shape[0]
    clip = float(np.sqrt(n_cells)) if clip is None else float(clip)
    if clip < 0:
        raise ValueError(f"clip must be non-negative, got {clip}")
    cell_totals, gene_totals = cell_and_gene_totals(X, chunk_size=chunk_size)
    share = gene_totals / max(gene_totals.sum(), np.finfo(float).tiny)

    def residuals(block: np.ndarray, rows: slice) -> np.ndarray:
        mu = cell_totals[rows, None] * share[None, :]
        sd = np.sqrt(mu + mu**2 / theta)
        # mu = 0 only where a gene or a cell has no counts at all: no deviation there
        out = np.divide(block - mu, sd, out=np.zeros_like(block), where=sd > 0)
        return np.clip(out, -clip, clip, out=out)

    _, var = gene_moments(X, residuals, chunk_size=chunk_size, ddof=0, max_elements=max_elements)
    var[gene_totals == 0] = 0.0
    return var


SCORES: dict[str, Callable[..., np.ndarray]] = {"pearson_residuals": pearson_residual_variance}


def select_genes(
    X,
    n_top: int,
    *,
    method: Method = "pearson_residuals",
    chunk_size: int = 10000,
    **options,
) -> np.ndarray:
    """Indices (sorted) of the ``n_top`` highest-scoring genes of a counts matrix.

    Parameters
    ----------
    X
        Raw counts, cells x genes: dense, scipy sparse or a backed AnnData matrix.
    n_top
        Genes to keep; all genes when ``n_top`` is at least their number.
    method
        ``"pearson_residuals"``: residual variance (:func:`pearson_residual_variance`).
    chunk_size
        Rows read at once.
    **options
        Passed to the score (``theta``, ``clip`` for Pearson residuals).

    Returns
    -------
    np.ndarray
        int64 gene positions in increasing order; ties keep the earlier gene.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).poisson(1.0, size=(100, 50)).astype(float)
    >>> X[:50, 2] += 5  # gene 2 responds in half of the cells
    >>> int(select_genes(X, 1)[0])
    2
    """
    if method not in SCORES:
        raise ValueError(f"unknown gene selection method {method!r}; choose from {list(SCORES)}")
    if n_top < 1:
        raise ValueError(f"n_top must be at least 1, got {n_top}")
    n_genes = X.shape[1]
    if n_top >= n_genes:
        return np.arange(n_genes)
    score = SCORES[method](X, chunk_size=chunk_size, **options)
    order = np.argsort(-score, kind="stable")
    return np.sort(order[:n_top])
