"""Realism ratio: nearest real cell over the typical real-to-real distance."""

import numpy as np
import pytest

from rnadiff.design._realism import nearest_neighbor_ratio


def test_fresh_cells_from_the_real_distribution_score_about_one():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(600, 10))
    fresh = rng.normal(size=(300, 10))
    ratios, ref = nearest_neighbor_ratio(fresh, real, n_components=10)
    assert ratios.shape == (300,) and ref > 0
    assert 0.8 < np.median(ratios) < 1.25


def test_cells_off_the_manifold_score_high_and_copies_score_zero():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 10))
    ratios, _ = nearest_neighbor_ratio(real[:50] + 5.0, real, n_components=10)
    assert np.median(ratios) > 2
    copies, _ = nearest_neighbor_ratio(real[:20], real, n_components=10)
    assert np.allclose(copies, 0, atol=1e-6)


def test_bad_inputs_are_refused():
    real = np.random.default_rng(0).normal(size=(50, 4))
    with pytest.raises(ValueError, match="genes"):
        nearest_neighbor_ratio(real[:, :3], real)
    with pytest.raises(ValueError, match="duplicates"):
        nearest_neighbor_ratio(real[:5], np.ones((10, 4)))
    with pytest.raises(ValueError, match="at least 3"):
        nearest_neighbor_ratio(real, real[:2])


def test_fresh_cells_score_about_one_with_many_genes_and_few_cells():
    # axes fitted on the real cells alone would fit their noise too and score fresh real
    # cells ~0.84 here (0.8 on Kang 2018); the pooled fit treats both populations alike
    rng = np.random.default_rng(0)
    scale = np.linspace(2.0, 0.3, 300)
    real = rng.normal(size=(300, 300)) * scale
    fresh = rng.normal(size=(150, 300)) * scale
    ratios, _ = nearest_neighbor_ratio(fresh, real, n_components=50)
    assert 0.97 < np.median(ratios) < 1.03
