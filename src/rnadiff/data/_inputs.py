"""What an expression matrix holds: raw counts, normalized values, or log-normalized values.

Decided from a bounded, seeded sample of cells, so a matrix of millions of cells (sparse,
possibly backed) is never read whole nor densified. Negative or missing values are checked
elsewhere (:mod:`rnadiff.data._validation`).

The log base of log-normalized input is read from its structure. After ``log_b(1 + x)``:

- when ``x`` is a normalization of every gene (``normalize_total``, TPM), ``b**v - 1`` sums to
  the same total in every cell;
- when ``x`` is UMI counts over a per-cell size factor (``x = k / s``), the non-zero values of
  ``b**v - 1`` within one cell are integer multiples of its smallest one (a count of 1 over
  ``s``). This holds on any subset of the genes, and only for the right base.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

from rnadiff.data._genes import widen_half

InputKind = Literal["counts", "lognorm", "normalized"]
LogBase = Literal["e", 2, 10]
LOG_BASES: dict[str, LogBase] = {"lognorm": "e", "log2": 2, "log10": 10}  # `input` option -> base

_LOG_MAX = 30.0  # log1p of normalized values stays far below this (log2 of 1e6 is 20)
_MAX_NONINTEGER = 0.01  # counts may carry this share of non-integers (ambient correction)
_EQUAL_TOTALS_CV = 0.02  # integers: real depths vary far more; rounding TPM moves totals less
_EXACT_TOTALS_CV = 1e-3  # normalized over all genes (then logged): totals agree to float error
_RATIO_TOL = 2e-3  # float32 storage moves a ratio below 64 by ~1e-4 at most
_RATIO_MAX = 64.0  # larger ratios are near an integer by float error alone
_RATIO_PASS = 0.9  # share of informative values whose ratio must be near an integer
_MIN_INFORMATIVE = 20  # fewer values than this decide nothing
_UNITS = (1, 2, 3)  # the smallest value of a cell may be a count of 1, 2 or 3
_BASES: dict[str, float | None] = {"e": np.e, "2": 2.0, "10": 10.0, "none": None}


@dataclass(frozen=True)
class InputInfo:
    """What :func:`detect_input` found in a sample of cells."""

    kind: InputKind
    log_base: LogBase | None  # base of the log, for kind "lognorm"
    description: str  # one sentence: what was found, what rnadiff will do
    n_noninteger: int  # non-integer stored values in the sample
    ambiguous: str | None = None  # why the input cannot be decided (the caller raises)
    n_cells: int = 0  # cells sampled
    n_values: int = 0  # non-zero values in the sample
    max_value: float = 0.0
    totals_cv: float = float("nan")  # spread (std / mean) of the sampled cells' totals


def sample_rows(X, *, sample_cells: int = 2000, seed: int = 0) -> sp.csr_matrix:
    """A seeded sample of at most ``sample_cells`` rows of ``X`` as CSR, in row order.

    Works on dense arrays, scipy sparse (CSR or CSC) and backed AnnData matrices; only the
    sampled rows are read, and dense input is converted in blocks of rows.
    """
    n_cells = X.shape[0]
    rows = np.arange(n_cells)
    if n_cells > sample_cells:
        rows = np.sort(np.random.default_rng(seed).choice(n_cells, sample_cells, replace=False))
    blocks = []
    for start in range(0, len(rows), 256):
        block = widen_half(X[rows[start : start + 256]])  # scipy.sparse has no float16
        blocks.append(sp.csr_matrix(block) if not sp.issparse(block) else block.tocsr())
    if not blocks:
        return sp.csr_matrix((0, X.shape[1]))
    sample = sp.vstack(blocks, format="csr")
    sample.eliminate_zeros()
    return sample


def _cv(totals: np.ndarray) -> float:
    """Spread of per-cell totals, over the cells with a non-zero total (nan below 3 cells)."""
    totals = totals[totals > 0]
    if len(totals) < 3:
        return float("nan")
    return float(totals.std() / totals.mean())


def _ratio_score(values: np.ndarray, row: np.ndarray, n_rows: int, base: float | None) -> float:
    """Share of a cell's values whose inverse transform is an integer multiple of a unit.

    The unit is the cell's smallest inverse value divided by 1, 2 or 3 (whichever fits the cell
    best). Values equal to the cell's smallest fit any base and are left out.
    """
    inv = values if base is None else np.expm1(values * np.log(base))
    smallest = np.full(n_rows, np.inf)
    np.minimum.at(smallest, row, inv)
    ratio = inv / smallest[row]
    informative = (ratio > 1 + 1e-6) & (ratio <= _RATIO_MAX)
    row, ratio = row[informative], ratio[informative]
    if len(ratio) < _MIN_INFORMATIVE:
        return float("nan")
    fits = []
    for unit in _UNITS:
        scaled = ratio * unit
        near = np.abs(scaled - np.rint(scaled)) <= _RATIO_TOL * unit
        fits.append(np.bincount(row, weights=near, minlength=n_rows))
    return float(np.max(fits, axis=0).sum() / len(ratio))


def _find_base(sample: sp.csr_matrix) -> tuple[str | None, str]:
    """The transform (a log base, or ``"none"``: unlogged) that the sample's structure fits.

    Returns the key of ``_BASES`` (``None`` when no transform fits) and the evidence.
    """
    values = sample.data.astype(np.float64)
    row = np.repeat(np.arange(sample.shape[0]), np.diff(sample.indptr))
    totals, spread = {}, {}
    for key, base in _BASES.items():
        if base is not None:  # sums of many unlogged values vary little by chance alone
            inv = np.expm1(values * np.log(base))
            totals[key] = np.bincount(row, weights=inv, minlength=sample.shape[0])
            spread[key] = _cv(totals[key])
    constant = [k for k, cv in spread.items() if cv <= _EXACT_TOTALS_CV]
    # one base only: rows that hold the same values in another order (quantile
    # normalization) have equal totals under every transform, which says nothing
    if len(constant) == 1:
        key = constant[0]
        total = np.median(totals[key][totals[key] > 0])
        return key, f"per-cell totals of the inverse all ≈ {total:.4g}"
    scores = {k: _ratio_score(values, row, sample.shape[0], b) for k, b in _BASES.items()}
    passing = {k: s for k, s in scores.items() if s >= _RATIO_PASS}
    if passing:
        key = max(passing, key=passing.get)
        return key, "in each cell, values are multiples of one count over the size factor"
    return None, ""


def _transform_name(key: str) -> str:
    return {"e": "log1p (natural)", "2": "log2(x+1)", "10": "log10(x+1)"}[key]


def detect_input(X, *, sample_cells: int = 2000, seed: int = 0) -> InputInfo:
    """Say what a non-negative expression matrix holds, from a seeded sample of cells.

    Parameters
    ----------
    X
        Cells x genes: a dense array, a scipy sparse matrix (CSR or CSC), or a backed AnnData
        matrix. Only ``sample_cells`` rows are read; the matrix is never densified.
    sample_cells
        Most cells to look at.
    seed
        Seed of the cell sample.

    Returns
    -------
    InputInfo
        ``kind``: ``"counts"`` (integers, or at most 1% non-integers: ambient-corrected),
        ``"normalized"`` (unlogged: TPM, CPM, FPKM) or ``"lognorm"`` (with ``log_base``).
        ``ambiguous`` says why the input cannot be decided (integers with equal totals, or
        log-like values of unknown base); ``kind`` is then the likelier reading.

    Examples
    --------
    >>> import numpy as np
    >>> detect_input(np.array([[1.0, 0, 3], [2, 5, 0], [0, 1, 1]])).kind
    'counts'
    """
    sample = sample_rows(X, sample_cells=sample_cells, seed=seed)
    values = sample.data
    n_cells, n_values = sample.shape[0], len(values)
    n_nonint = int(np.count_nonzero(values != np.rint(values)))
    vmax = float(values.max(initial=0.0))
    cv = _cv(sample.sum(axis=1).A1.astype(np.float64))
    seen = f"in {n_cells} sampled cells"
    stats = {"n_noninteger": n_nonint, "n_cells": n_cells, "n_values": n_values}
    stats |= {"max_value": vmax, "totals_cv": cv}
    counts_action = "rnadiff normalizes each cell's total and takes log1p"

    def info(kind, description, log_base=None, ambiguous=None):
        return InputInfo(kind, log_base, description, ambiguous=ambiguous, **stats)

    if n_nonint <= _MAX_NONINTEGER * n_values:
        if cv <= _EQUAL_TOTALS_CV:
            total = float(np.median(sample.sum(axis=1).A1))
            message = (
                f"integer values whose per-cell totals are all ≈ {total:.4g} {seen}: either "
                "counts downsampled to equal depth, or normalized values (TPM, CPM) rounded to "
                "integers; pass input='counts' or input='normalized' to say which"
            )
            return info("counts", f"Undecided: {message}.", ambiguous=message)
        found = "raw counts (integers)"
        if n_nonint:
            found = f"counts with {n_nonint} non-integer values (ambient-corrected?)"
        return info("counts", f"{found[0].upper()}{found[1:]} {seen}: {counts_action}.")
    if vmax < _LOG_MAX:
        key, evidence = _find_base(sample)
        if key == "none":
            return info(
                "normalized",
                f"Normalized unlogged values (max {vmax:.3g}; {evidence}) {seen}: rnadiff "
                "rescales each cell's total and takes log1p.",
            )
        if key is not None:
            base: LogBase = "e" if key == "e" else int(key)
            action = "uses them as they are" if key == "e" else "converts them to natural log"
            return info(
                "lognorm",
                f"Log-normalized values, {_transform_name(key)} (max {vmax:.3g}; {evidence}) "
                f"{seen}: rnadiff {action}.",
                log_base=base,
            )
        message = (
            f"values look logged (non-integers up to {vmax:.3g}) {seen}, but they are not "
            "log(1 + x) of normalized counts in base e, 2 or 10 (scran or SCTransform output, "
            "log of microarray intensities?); state the log base with input='lognorm' "
            "(natural log), input='log2' or input='log10'"
        )
        return info("lognorm", f"Undecided: {message}.", ambiguous=message)
    if cv <= _EXACT_TOTALS_CV:
        total = float(np.median(sample.sum(axis=1).A1))
        found = f"TPM/CPM-like: non-integers up to {vmax:.4g}, per-cell totals all ≈ {total:.4g}"
    else:
        found = (
            f"FPKM-like, or TPM of a subset of genes: non-integers up to {vmax:.4g}, per-cell "
            f"totals vary (CV {cv:.2g})"
        )
    return info(
        "normalized",
        f"Normalized unlogged values ({found}) {seen}: rnadiff rescales each cell's total "
        "and takes log1p.",
    )


def to_natural_log(values, base: LogBase | None):
    """Values of ``log_b(1 + x)`` as ``ln(1 + x)``: ``ln(1 + x) = ln(b) log_b(1 + x)``.

    Parameters
    ----------
    values
        A dense array or scipy sparse matrix of log values (zeros stay zeros).
    base
        Their base: ``"e"`` or ``None`` (returned as they are), 2 or 10.

    Returns
    -------
    The natural-log values, a new array or matrix of the same kind (the input is not changed).
    """
    if base is None or base == "e":
        return values
    if base not in (2, 10):
        raise ValueError(f"log base must be 'e', 2 or 10, got {base!r}")
    factor = np.log(float(base))
    if sp.issparse(values):
        return values * factor
    return np.asarray(values) * np.asarray(factor, dtype=np.result_type(values, np.float32))
