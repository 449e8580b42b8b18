"""Realism numbers and figure of generated counts (count_realism, plot_count_realism)."""

import numpy as np
import pytest
import scipy.sparse as sp

from rnadiff._errors import InputError
from rnadiff.evaluation import count_realism, plot_count_realism


def _cells(rng, n, means, theta=None, depth=1.0):
    """Poisson (theta None) or negative-binomial counts with the given gene means."""
    mu = np.outer(np.full(n, depth), means)
    if theta is None:
        return rng.poisson(mu)
    return rng.negative_binomial(theta, theta / (theta + mu))


def test_the_same_cells_score_as_identical():
    rng = np.random.default_rng(0)
    x = _cells(rng, 300, rng.gamma(1.0, 2.0, 80), theta=2.0)
    out = count_realism(x, sp.csr_matrix(x))
    assert out["library_ks"] == 0
    assert out["zero_fraction_gene_corr"] == pytest.approx(1)
    assert out["log_variance_gene_corr"] == pytest.approx(1)
    assert out["log_fano_gene_corr"] == pytest.approx(1)
    assert out["fano_log2_ratio"] == 0


def test_poisson_counts_are_less_dispersed_than_negative_binomial_ones():
    # same gene means: Fano 1 for Poisson, 1 + mean / theta for NB; the median log2 ratio
    # follows
    rng = np.random.default_rng(1)
    means = np.full(200, 4.0)
    real = _cells(rng, 4000, means, theta=2.0)
    poisson = _cells(rng, 4000, means)
    out = count_realism(poisson, real)
    assert out["fano_log2_ratio"] == pytest.approx(np.log2(1 / (1 + 4.0 / 2.0)), abs=0.1)
    same = count_realism(_cells(rng, 4000, means, theta=2.0), real)
    assert abs(same["fano_log2_ratio"]) < 0.05


def test_library_sizes_from_another_depth_are_told_apart():
    rng = np.random.default_rng(2)
    means = rng.gamma(1.0, 1.0, 100)
    out = count_realism(_cells(rng, 500, means, depth=4.0), _cells(rng, 500, means))
    assert out["library_ks"] > 0.9
    # zeros and variances still rank the genes alike
    assert out["zero_fraction_gene_corr"] > 0.8 and out["log_variance_gene_corr"] > 0.8


def test_bad_shapes_are_one_clear_error():
    with pytest.raises(InputError, match="2 and 3 genes"):
        count_realism(np.ones((4, 2)), np.ones((4, 3)))
    with pytest.raises(InputError, match="at least 2 cells"):
        count_realism(np.ones((1, 2)), np.ones((4, 2)))


def test_the_figure_is_written(tmp_path):
    rng = np.random.default_rng(3)
    means = rng.gamma(1.0, 2.0, 50)
    path = tmp_path / "realism.png"
    plot_count_realism(_cells(rng, 100, means), _cells(rng, 100, means, 2.0), path, title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
