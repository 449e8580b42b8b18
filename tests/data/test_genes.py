"""Streaming gene selection: analytic Pearson residuals and per-gene moments over row chunks."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from rnadiff.data._genes import (
    cell_and_gene_totals,
    gene_moments,
    iter_dense_blocks,
    pearson_residual_variance,
    select_genes,
)

KANG = "kang2018_ifnb_pbmc_counts.h5ad"
KANG_9K = "kang2018_ifnb_9k_genes_counts.h5ad"
PAPALEXI = "papalexi2021_eccite_thp1_counts.h5ad"


def _residual_variance_dense(X: np.ndarray, theta: float, clip: float) -> np.ndarray:
    """Lause et al. 2021 eq. 3 on the whole dense matrix at once."""
    mu = X.sum(axis=1, keepdims=True) * X.sum(axis=0, keepdims=True) / X.sum()
    res = np.clip((X - mu) / np.sqrt(mu + mu**2 / theta), -clip, clip)
    return res.var(axis=0)


@pytest.fixture(scope="module")
def small_counts() -> np.ndarray:
    """Negative binomial counts with varied depths and gene means, and one responding gene."""
    rng = np.random.default_rng(0)
    depth = rng.lognormal(0, 0.5, size=(300, 1))
    mean = rng.lognormal(-1, 1.5, size=(1, 40))
    X = rng.negative_binomial(5, 5 / (5 + depth * mean)).astype(np.float64)
    X[:150, 7] += rng.poisson(8 * depth[:150, 0])
    return X


@pytest.mark.parametrize("file", [KANG, PAPALEXI])
def test_matches_scanpy_pearson_residuals(data_file, file):
    sc = pytest.importorskip("scanpy")
    adata = ad.read_h5ad(data_file(file))
    n_top = 200
    ref = sc.experimental.pp.highly_variable_genes(adata, n_top_genes=n_top, inplace=False)
    ours = pearson_residual_variance(adata.X, chunk_size=500)
    np.testing.assert_allclose(ours, ref["residual_variances"].to_numpy(), rtol=1e-6)
    expected = np.flatnonzero(ref["highly_variable"].to_numpy())
    np.testing.assert_array_equal(select_genes(adata.X, n_top, chunk_size=500), expected)


@pytest.mark.parametrize("chunk_size", [1, 7, 300, 10000])
@pytest.mark.parametrize("max_elements", [1, 100, 2**22])
@pytest.mark.parametrize("theta", [100.0, 2.0])
def test_streaming_equals_the_whole_matrix_formula(small_counts, chunk_size, max_elements, theta):
    clip = np.sqrt(small_counts.shape[0])
    expected = _residual_variance_dense(small_counts, theta, clip)
    ours = pearson_residual_variance(
        sp.csr_matrix(small_counts), theta=theta, chunk_size=chunk_size, max_elements=max_elements
    )
    np.testing.assert_allclose(ours, expected, rtol=1e-10)


def test_clip_bounds_the_residual_variance(small_counts):
    assert pearson_residual_variance(small_counts, clip=0.5).max() <= 0.25 + 1e-12
    np.testing.assert_allclose(
        pearson_residual_variance(small_counts, clip=2.0),
        _residual_variance_dense(small_counts, 100.0, 2.0),
        rtol=1e-10,
    )


def test_formats_and_backed_files_agree(small_counts, tmp_path):
    path = tmp_path / "counts.h5ad"
    ad.AnnData(sp.csr_matrix(small_counts.astype(np.float32))).write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    expected = pearson_residual_variance(small_counts)
    for X in (sp.csc_matrix(small_counts), sp.csr_matrix(small_counts), backed.X):
        np.testing.assert_allclose(pearson_residual_variance(X, chunk_size=64), expected)
    backed.file.close()


def test_genes_and_cells_without_counts_do_not_break_it(small_counts):
    X = small_counts.copy()
    X[:, 3] = 0
    X[10] = 0
    var = pearson_residual_variance(sp.csr_matrix(X))
    assert np.isfinite(var).all() and var[3] == 0
    assert 3 not in select_genes(X, X.shape[1] - 1)


def test_select_genes_keeps_the_responding_gene_and_sorts(small_counts):
    chosen = select_genes(small_counts, 5)
    assert 7 in chosen and len(chosen) == 5
    assert np.all(np.diff(chosen) > 0)
    np.testing.assert_array_equal(select_genes(small_counts, 100), np.arange(40))
    with pytest.raises(ValueError, match="unknown gene selection method"):
        select_genes(small_counts, 5, method="seurat")


def test_kang_interferon_genes_are_selected(data_file):
    adata = ad.read_h5ad(data_file(KANG_9K))
    chosen = adata.var_names[select_genes(adata.X, 2000)]
    assert {"ISG15", "IFIT1", "IFI6", "MX1", "IFIT3", "ISG20", "RSAD2"} <= set(chosen)


class _ChunkGuard:
    """A matrix that only allows contiguous row slices of at most ``limit`` rows."""

    def __init__(self, X, limit):
        self.X, self.shape, self.limit = X, X.shape, limit

    def __getitem__(self, rows):
        assert isinstance(rows, slice) and rows.stop - rows.start <= self.limit
        return self.X[rows]


def test_never_densifies_more_than_asked(small_counts):
    guarded = _ChunkGuard(sp.csr_matrix(small_counts), limit=50)
    seen = []

    def spy(block, rows):
        seen.append(block.size)
        return block

    gene_moments(guarded, spy, chunk_size=50, max_elements=200)
    assert max(seen) <= 200 and sum(seen) == small_counts.size
    pearson_residual_variance(guarded, chunk_size=50, max_elements=200)
    blocks = list(iter_dense_blocks(guarded, chunk_size=50, max_elements=200))
    assert [b.shape[0] for _, b in blocks] == [5] * 60
    assert all(b.dtype == np.float64 for _, b in blocks)


@pytest.mark.parametrize("chunk_size", [1, 13, 1000])
@pytest.mark.parametrize("ddof", [0, 1])
def test_gene_moments_match_numpy(small_counts, chunk_size, ddof):
    totals, _ = cell_and_gene_totals(sp.csr_matrix(small_counts), chunk_size=chunk_size)
    np.testing.assert_allclose(totals, small_counts.sum(axis=1))

    def log_norm(block, rows):  # per-cell factors: the slice says which cells
        return np.log1p(block * (1e4 / totals[rows, None]))

    expected = np.log1p(small_counts * (1e4 / small_counts.sum(axis=1, keepdims=True)))
    mean, var = gene_moments(
        sp.csr_matrix(small_counts), log_norm, chunk_size=chunk_size, ddof=ddof
    )
    np.testing.assert_allclose(mean, expected.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(var, expected.var(axis=0, ddof=ddof), rtol=1e-10)


def test_gene_moments_are_stable_far_from_zero():
    rng = np.random.default_rng(1)
    X = 1e8 + rng.normal(size=(1000, 3))  # naive sums of squares lose every digit here
    _, var = gene_moments(X, chunk_size=37)
    np.testing.assert_allclose(var, X.var(axis=0), rtol=1e-6)
