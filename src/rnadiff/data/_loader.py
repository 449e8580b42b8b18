"""Minibatches of training cells, densified one at a time.

The training matrix stays as the user gave it: a dense array, a scipy sparse matrix in memory,
or a backed (on-disk) AnnData matrix. :class:`CellMatrix` reads the rows of one minibatch,
normalizes them as preprocessing did and returns them in the model's space; the whole matrix is
never densified. On disk, rows are read a block of neighbouring cells at a time (a contiguous
read) and kept in a small cache, and the minibatches are drawn by block shuffling
(:func:`rnadiff.training.batch_indices`) so that consecutive minibatches share blocks.
:class:`ConditionTable` keeps each cell's condition as a code into a table of the distinct
conditions, so the memory of conditions grows with the cells, not with cells x tokens.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from rnadiff.data._covariates import CovariateRegistry
from rnadiff.data._expression import Source, columns, matrix
from rnadiff.data._genes import widen_half
from rnadiff.data._preprocessing import PreprocessState, totals

BLOCK = 256  # cells read from disk at once (one contiguous read)


def is_backed(M) -> bool:
    """Whether ``M`` lives on disk (an h5py-backed AnnData matrix), not in memory."""
    return not isinstance(M, np.ndarray) and not sp.issparse(M)


class CellMatrix:
    """The training cells in the model's space, one minibatch at a time.

    Parameters
    ----------
    M
        Cells x genes as given: dense, scipy sparse, or backed.
    cols
        Positions of the modelled genes in ``M``'s columns.
    state
        The preprocessing to repeat (normalization, log, per-gene scaling).
    cell_totals
        Each cell's total over all of ``M``'s genes (its size factor), ``None`` for
        log-normalized input.
    cache_blocks
        Blocks of :data:`BLOCK` cells kept in memory when ``M`` is on disk.
    """

    def __init__(
        self,
        M,
        cols: np.ndarray,
        state: PreprocessState,
        cell_totals: np.ndarray | None,
        *,
        cache_blocks: int = 64,
    ):
        self.M, self.cols, self.state, self.totals = M, np.asarray(cols), state, cell_totals
        self.backed = is_backed(M)
        self._cache: OrderedDict[int, sp.csr_matrix] = OrderedDict()
        self._cache_blocks = cache_blocks
        base = state.log_base
        self._log_factor = float(np.log(np.e if base == "e" else float(base)))
        self._mean = state.mean.astype(np.float32)
        self._std = state.std.astype(np.float32)
        # a gene with no value in a cell: the same model-space value in every cell
        self._zero = -self._mean / self._std
        n_input = M.shape[1]
        # every input gene modelled, in order: no column indexing at all
        self._all_cols = len(self.cols) == n_input and np.array_equal(self.cols, np.arange(n_input))
        # input column -> modelled position (-1: not modelled), for the stored values alone
        self._col_map = np.full(n_input, -1, dtype=np.int64)
        self._col_map[self.cols] = np.arange(len(self.cols))
        # duplicate entries (summed by scipy) rule out writing stored values in place
        self._canonical = sp.issparse(M) and M.format == "csr" and M.has_canonical_format

    @classmethod
    def of(cls, adata, state: PreprocessState, source: Source) -> CellMatrix:
        """The training cells of ``adata`` read from ``source``."""
        M, names = matrix(adata, source)
        cols = columns(names, state.genes, source.what)
        cell_totals = None if state.input_type == "lognorm" else totals(M)
        return cls(M, cols, state, cell_totals)

    def __len__(self) -> int:
        return self.M.shape[0]

    @property
    def n_genes(self) -> int:
        return len(self.cols)

    def counts(self, idx: np.ndarray) -> np.ndarray:
        """The raw values of the modelled genes for cells ``idx`` (float64, dense)."""
        sub = self._read(np.asarray(idx))
        return np.asarray(sub.toarray() if sp.issparse(sub) else sub, dtype=np.float64)

    def rows(self, idx) -> torch.Tensor:
        """Cells ``idx`` in the model's space, ``(len(idx), n_genes)`` float32.

        Computed in float32 (preprocessing's float64 values up to float32 rounding). For
        sparse input only the stored values are normalized and log-transformed; every other
        entry is the gene's value at zero.
        """
        idx = np.asarray(idx)
        if self.backed:  # the stored entries of each cached block, gathered block by block
            return self._from_stored(idx, *self._backed_entries(idx), len(idx))
        if self._canonical:  # in memory: the minibatch's stored values, no scipy indexing
            nz_row, col, val = _gathered(self.M, idx)
            if not self._all_cols:
                col = self._col_map[col]
                keep = col >= 0
                nz_row, col, val = nz_row[keep], col[keep], val[keep]
            return self._from_stored(idx, nz_row, col, val, len(idx))
        sub = self.M[idx] if self._all_cols else self.M[idx][:, self.cols]
        return self._from_dense(idx, sub)

    def _normalized(self, idx: np.ndarray, values: np.ndarray, row: np.ndarray | None):
        """Values of cells ``idx`` (``row``: each value's position in ``idx``; ``None``:
        ``values`` is dense, a row per cell) normalized and logged as preprocessing does."""
        values = np.asarray(values, dtype=np.float32)
        if self.state.input_type == "lognorm":
            return values * np.float32(self._log_factor)
        size = (self.state.target_sum / self.totals[idx]).astype(np.float32)
        return np.log1p(values * (size[:, None] if row is None else size[row]))

    def _from_stored(self, idx, row, col, val, n: int) -> torch.Tensor:
        """A minibatch from its stored (nonzero) entries: ``(row, col, value)``."""
        out = np.empty((n, self.n_genes), dtype=np.float32)
        out[:] = self._zero
        z = (self._normalized(idx, val, row) - self._mean[col]) / self._std[col]
        out.reshape(-1)[row * self.n_genes + col] = z  # flat: twice as fast as out[row, col]
        return torch.from_numpy(out)

    def _from_dense(self, idx, sub) -> torch.Tensor:
        x = sub.toarray() if sp.issparse(sub) else np.asarray(sub)
        x = self._normalized(idx, x, None)
        x -= self._mean
        x /= self._std
        return torch.from_numpy(x)

    def _backed_entries(self, idx: np.ndarray):
        """The stored entries of cells ``idx`` read from disk: (position in ``idx``, modelled
        column, value), sliced row by row out of the cached blocks (no stacking of blocks:
        a minibatch drawn from a pool of 32 blocks would copy 8,192 cells to use 128; this
        is ~4x faster than gathering block by block)."""
        values, cols = [np.zeros(0, dtype=np.float32)], [np.zeros(0, dtype=np.int32)]
        lengths = np.zeros(len(idx), dtype=np.int64)
        for k, i in enumerate(idx.tolist()):
            b = i // BLOCK
            block = self._block(b)
            start, stop = block.indptr[i - b * BLOCK], block.indptr[i - b * BLOCK + 1]
            values.append(block.data[start:stop])
            cols.append(block.indices[start:stop])
            lengths[k] = stop - start
        rows = np.repeat(np.arange(len(idx)), lengths)
        return rows, np.concatenate(cols), np.concatenate(values)

    def _read(self, idx: np.ndarray):
        """The modelled genes' values of cells ``idx`` as given (sparse or dense)."""
        if not self.backed:
            return self.M[idx][:, self.cols]
        blocks = np.unique(idx // BLOCK)
        parts = {b: self._block(int(b)) for b in blocks}
        pos = np.searchsorted(blocks, idx // BLOCK)
        offsets = np.concatenate([[0], np.cumsum([parts[b].shape[0] for b in blocks])])
        stacked = sp.vstack([parts[b] for b in blocks], format="csr")
        return stacked[offsets[pos] + idx % BLOCK]

    def _block(self, b: int) -> sp.csr_matrix:
        """Block ``b`` of :data:`BLOCK` cells (modelled genes, CSR), read once and cached."""
        if b in self._cache:
            self._cache.move_to_end(b)
            return self._cache[b]
        start = b * BLOCK
        chunk = _read_rows(self.M, start, min(start + BLOCK, self.M.shape[0]))
        chunk = chunk if self._all_cols else chunk[:, self.cols]
        chunk.sum_duplicates()  # canonical: one entry per cell and gene, in column order
        self._cache[b] = chunk
        if len(self._cache) > self._cache_blocks:
            self._cache.popitem(last=False)
        return chunk


def _read_rows(M, start: int, stop: int) -> sp.csr_matrix:
    """Rows ``start:stop`` of a backed matrix as CSR. A CSR matrix on disk is read as three
    contiguous slices of its arrays (indptr, then indices and data), about 4x faster than
    anndata's backed indexing of the same rows; CSC and dense ones through anndata / h5py."""
    group = getattr(M, "group", None)
    if getattr(M, "format", None) == "csr" and group is not None:
        indptr = np.asarray(group["indptr"][start : stop + 1], dtype=np.int64)
        lo, hi = int(indptr[0]), int(indptr[-1])
        arrays = (np.asarray(group["data"][lo:hi]), np.asarray(group["indices"][lo:hi]))
        return sp.csr_matrix((*arrays, indptr - lo), shape=(stop - start, M.shape[1]))
    return sp.csr_matrix(widen_half(M[start:stop]))


def _gathered(M: sp.csr_matrix, idx: np.ndarray):
    """The stored entries of rows ``idx`` of CSR ``M``: (position in ``idx``, column, value)."""
    starts, ends = M.indptr[idx], M.indptr[idx + 1]
    lengths = ends - starts
    n = int(lengths.sum())
    # position of each gathered entry in M.data: its row's start plus its rank in the row
    first = np.cumsum(lengths) - lengths
    pos = np.arange(n, dtype=np.int64) + np.repeat(starts - first, lengths)
    return np.repeat(np.arange(len(idx)), lengths), M.indices[pos], M.data[pos]


class ConditionTable:
    """Each cell's condition as a code into a table of the distinct conditions.

    ``rows(idx)`` gives the condition tensors of cells ``idx``, as
    :meth:`rnadiff.data.CovariateRegistry.encode` would for those cells.
    """

    def __init__(self, registry: CovariateRegistry, obs: pd.DataFrame):
        keys = registry.keys
        frame = obs[keys] if keys else pd.DataFrame(index=obs.index)
        if keys:
            labels = pd.Series(
                ["\x1f".join(map(str, row)) for row in frame.itertuples(index=False)],
                dtype=object,
            )
            codes, _ = pd.factorize(labels)
            _, first = np.unique(codes, return_index=True)  # each condition's first cell
            encoded = registry.encode(frame.iloc[first])
        else:
            codes, encoded = np.zeros(len(obs), dtype=np.int64), {}
        self.codes = torch.from_numpy(codes.astype(np.int64))
        self.table = {k: torch.from_numpy(v) for k, v in encoded.items()}

    def __len__(self) -> int:
        return len(self.codes)

    def rows(self, idx) -> dict[str, torch.Tensor]:
        code = self.codes[torch.as_tensor(idx)]
        return {k: v[code] for k, v in self.table.items()}
