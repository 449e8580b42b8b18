"""Input detection: what an expression matrix holds, read from a bounded sample of cells.

Each case is built from real counts (Zeisel 2015 deep cortex, 500 cells x 3529 genes) the way
a user's pipeline would have made it, or taken from a real file that holds it.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from rnadiff.data._inputs import LOG_BASES, detect_input, sample_rows, to_natural_log

ZEISEL = "zeisel2015_cortex_deep_counts.h5ad"
LOGS = {"e": np.log1p, 2: lambda x: np.log2(1 + x), 10: lambda x: np.log10(1 + x)}


@pytest.fixture(scope="module")
def counts(data_file) -> sp.csr_matrix:
    """Real UMI counts, float32 CSR (as read from an .h5ad)."""
    return sp.csr_matrix(ad.read_h5ad(data_file(ZEISEL)).X, dtype=np.float32)


def _scaled(X: sp.csr_matrix, factors: np.ndarray) -> sp.csr_matrix:
    """Each row of X times its factor, float32, as scanpy would store it."""
    return sp.csr_matrix(sp.diags(factors) @ X, dtype=np.float32)


def _normalize_total(X: sp.csr_matrix, target: float) -> sp.csr_matrix:
    return _scaled(X, target / np.asarray(X.sum(axis=1)).ravel())


def _logged(X: sp.csr_matrix, base) -> sp.csr_matrix:
    out = X.copy()
    out.data = LOGS[base](out.data.astype(np.float64)).astype(np.float32)
    return out


def _tpm(X: sp.csr_matrix, seed: int = 0) -> sp.csr_matrix:
    """Counts over random gene lengths, scaled to 1e6 per cell (not multiples of one unit)."""
    lengths = np.random.default_rng(seed).lognormal(7.5, 0.6, size=X.shape[1])
    per_kb = sp.csr_matrix(X @ sp.diags(1e3 / lengths))
    return _normalize_total(per_kb, 1e6)


@pytest.mark.parametrize("fmt", ["csr", "csc", "dense"])
def test_raw_counts(counts, fmt):
    X = {"csr": counts, "csc": counts.tocsc(), "dense": counts.toarray()}[fmt]
    info = detect_input(X)
    assert (info.kind, info.log_base, info.ambiguous) == ("counts", None, None)
    assert info.n_noninteger == 0 and info.n_cells == counts.shape[0]
    assert "raw counts" in info.description.lower()


def test_counts_with_few_noninteger_values_are_counts(counts):
    X = counts.copy()
    rng = np.random.default_rng(0)
    hit = rng.choice(X.nnz, X.nnz // 200, replace=False)  # 0.5% of the stored values
    X.data[hit] -= rng.uniform(0.1, 0.9, size=len(hit)).astype(np.float32)
    info = detect_input(X)
    assert (info.kind, info.ambiguous) == ("counts", None)
    assert info.n_noninteger == len(hit)
    assert f"{len(hit)} non-integer values (ambient-corrected?)" in info.description


@pytest.mark.parametrize("how", ["downsampled", "rounded_cpm"])
def test_integers_with_equal_totals_are_ambiguous(counts, how):
    if how == "downsampled":  # exactly 5000 UMIs per cell, drawn without replacement
        rng = np.random.default_rng(0)
        dense = counts.toarray().astype(np.int64)
        X = np.stack([rng.multivariate_hypergeometric(row, 5000) for row in dense])
    else:
        X = _normalize_total(counts, 1e6)
        X.data = np.rint(X.data)
    info = detect_input(X)
    assert info.ambiguous is not None and info.n_noninteger == 0
    assert "downsampled" in info.ambiguous and "rounded" in info.ambiguous
    assert "input='counts'" in info.ambiguous and "input='normalized'" in info.ambiguous


def test_cpm_is_normalized(counts):
    info = detect_input(_normalize_total(counts, 1e6))
    assert (info.kind, info.log_base, info.ambiguous) == ("normalized", None, None)
    assert "TPM/CPM-like" in info.description


def test_fpkm_is_normalized(counts):
    lengths = np.random.default_rng(1).lognormal(7.5, 0.6, size=counts.shape[1])
    fpkm = _scaled(sp.csr_matrix(counts @ sp.diags(1e3 / lengths)), 1e6 / counts.sum(axis=1).A1)
    info = detect_input(fpkm)
    assert (info.kind, info.ambiguous) == ("normalized", None)
    assert "FPKM-like" in info.description


def test_real_fpkm_file(data_file):
    X = ad.read_h5ad(data_file("trapnell2014_hsmm_timecourse_fpkm.h5ad")).X
    info = detect_input(X)
    assert (info.kind, info.ambiguous) == ("normalized", None)
    assert "FPKM-like" in info.description


@pytest.mark.parametrize("base", ["e", 2, 10])
@pytest.mark.parametrize("genes", ["all", "subset"])
@pytest.mark.parametrize("target", [1e4, 1e6])
def test_log_normalized_base(counts, base, genes, target):
    X = _logged(_normalize_total(counts, target), base)
    if genes == "subset":  # per-cell totals of the inverse no longer agree
        keep = np.random.default_rng(2).choice(X.shape[1], X.shape[1] // 4, replace=False)
        X = X[:, np.sort(keep)]
    info = detect_input(X)
    assert (info.kind, info.log_base, info.ambiguous) == ("lognorm", base, None)
    evidence = "totals of the inverse" if genes == "all" else "multiples of one count"
    assert evidence in info.description


def test_log2_tpm_is_base_2(counts):
    info = detect_input(_logged(_tpm(counts), 2))
    assert (info.kind, info.log_base, info.ambiguous) == ("lognorm", 2, None)
    assert "≈ 1e+06" in info.description


@pytest.mark.parametrize(
    ("file", "layer", "base"),
    [
        ("kang2018_ifnb_pbmc_counts.h5ad", "logcounts", 2),  # scater's log2(x / s + 1)
        ("norman2019_tiny_counts.h5ad", None, "e"),  # scanpy's log1p of normalize_total
    ],
)
def test_real_log_normalized_files(data_file, file, layer, base):
    adata = ad.read_h5ad(data_file(file))
    info = detect_input(adata.X if layer is None else adata.layers[layer])
    assert (info.kind, info.log_base, info.ambiguous) == ("lognorm", base, None)


def _log2_intensities() -> np.ndarray:
    """Bulk microarray-like log2 intensities: gene effects, array brightness, noise."""
    rng = np.random.default_rng(3)
    gene = rng.normal(8, 2, size=800)
    array = rng.normal(0, 0.3, size=(120, 1))
    return (gene + array + rng.normal(0, 0.5, size=(120, 800))).clip(1, None)


def _log1p_of_ambient_corrected(counts: sp.csr_matrix) -> sp.csr_matrix:
    """log1p of normalized counts minus a continuous ambient estimate: no count structure."""
    X = _normalize_total(counts, 1e4)
    X.data = np.log1p(X.data * np.random.default_rng(4).uniform(0.5, 1.0, size=X.nnz))
    return X


@pytest.mark.parametrize("case", ["lincs", "log2_intensities", "log1p_ambient"])
def test_logged_without_a_base_is_ambiguous(counts, data_file, case):
    if case == "lincs":  # real L1000 log2 expression, quantile-normalized
        X = ad.read_h5ad(data_file("lincs2014_ljp005_a375_doses.h5ad")).X
    elif case == "log2_intensities":
        X = _log2_intensities()
    else:
        X = _log1p_of_ambient_corrected(counts)
    info = detect_input(X)
    assert (info.kind, info.log_base) == ("lognorm", None)
    assert info.ambiguous is not None
    for option in ("input='lognorm'", "input='log2'", "input='log10'"):
        assert option in info.ambiguous


class _RecordingMatrix:
    """A huge sparse matrix that records which rows were read."""

    def __init__(self, X):
        self.X, self.shape, self.rows_read = X, X.shape, []

    def __getitem__(self, rows):
        self.rows_read.extend(np.atleast_1d(rows).tolist())
        return self.X[rows]


def test_reads_only_a_bounded_seeded_sample(counts):
    big = sp.vstack([counts] * 20, format="csr")  # 10,000 cells
    recorded = _RecordingMatrix(big)
    info = detect_input(recorded, sample_cells=700, seed=5)
    assert info.n_cells == 700 and len(set(recorded.rows_read)) == 700
    assert info.kind == "counts"
    assert sample_rows(big, sample_cells=700, seed=5).nnz == sum(
        big[r].nnz for r in recorded.rows_read
    )
    same = sample_rows(big, sample_cells=700, seed=5)
    other = sample_rows(big, sample_cells=700, seed=6)
    assert (same != sample_rows(big, sample_cells=700, seed=5)).nnz == 0
    assert (same != other).nnz > 0


def test_option_names_map_to_bases():
    assert LOG_BASES == {"lognorm": "e", "log2": 2, "log10": 10}


@pytest.mark.parametrize("base", [2, 10, "e"])
@pytest.mark.parametrize("sparse", [False, True])
def test_to_natural_log_is_log1p(counts, base, sparse):
    x = _normalize_total(counts[:50], 1e4)
    logged = _logged(x, base)
    before = logged.copy()
    out = to_natural_log(logged if sparse else logged.toarray(), base)
    assert sp.issparse(out) == sparse
    dense = out.toarray() if sparse else out
    np.testing.assert_allclose(dense, np.log1p(x.toarray()), rtol=1e-5, atol=1e-6)
    assert (logged != before).nnz == 0  # the input is left as it was


def test_to_natural_log_rejects_other_bases():
    with pytest.raises(ValueError, match="log base"):
        to_natural_log(np.ones(3), 3)
