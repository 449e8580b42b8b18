"""Counting noise of log-normalized counts: known answers and Monte Carlo."""

import numpy as np
import pytest

from rnadiff.diffusion import log_poisson_error, log_poisson_variance, technical_sigma


def _monte_carlo(m, depth, n=400_000, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.poisson(np.asarray(m) * depth / 1e4, size=(n, len(m)))
    return np.log1p(c * 1e4 / depth).var(axis=0)


@pytest.mark.parametrize("depth", [500.0, 2000.0, 20000.0])
def test_variance_matches_sampling(depth):
    m = np.array([0.05, 0.5, 2.0, 20.0, 200.0, 2000.0])  # Poisson means from 0.0025 to 4000
    np.testing.assert_allclose(log_poisson_variance(m, depth), _monte_carlo(m, depth), rtol=0.03)


def test_variance_known_values_and_limits():
    assert log_poisson_variance([0.0], 1000.0)[0] == 0.0  # never observed: no noise
    # Poisson mean 1, k = 10: values 0 (p=e^-1), log(11) (p=e^-1), log(21) (p=e^-1/2), ...
    exact = log_poisson_variance([10.0], 1000.0)[0]
    c = np.arange(60)
    p = np.exp(-1.0) / np.array([float(np.prod(np.arange(1, i + 1))) for i in c])
    y = np.log1p(10 * c)
    assert exact == pytest.approx((p * (y - (p * y).sum()) ** 2).sum(), rel=1e-9)
    # the exact sum and the delta method meet at the switch (Poisson mean 10^4)
    below, above = log_poisson_variance([9999.0, 10001.0], 1e4)
    assert below == pytest.approx(above, rel=0.01)
    # deeper cells are less noisy once a gene is counted at all...
    v = [log_poisson_variance([50.0, 500.0], d) for d in (300.0, 3000.0, 30000.0)]
    assert (v[0] > v[1]).all() and (v[1] > v[2]).all()
    # ...while a gene almost never counted varies little (mostly zeros): Poisson mean 0.03
    # vs 0.3 (the delta method would say the opposite)
    shallow, deeper = (log_poisson_variance([1.0], d)[0] for d in (300.0, 3000.0))
    assert shallow < deeper


@pytest.mark.parametrize("depth", [300.0, 3000.0])
def test_error_matches_sampling_and_falls_with_depth(depth):
    m = np.array([0.5, 2.0, 20.0, 200.0])
    rng = np.random.default_rng(1)
    c = rng.poisson(m * depth / 1e4, size=(400_000, len(m)))
    sampled = ((np.log1p(c * 1e4 / depth) - np.log1p(m)) ** 2).mean(axis=0)
    np.testing.assert_allclose(log_poisson_error(m, depth), sampled, rtol=0.03)
    assert (log_poisson_error(m, depth) >= log_poisson_variance(m, depth)).all()
    # unlike the variance, the error falls with depth where a gene is seldom counted (Poisson
    # means 0.6 and 0.06 at 300 UMIs)
    sparse = np.array([20.0, 2.0])
    assert (log_poisson_error(sparse, 300.0) > log_poisson_error(sparse, 3000.0)).all()
    assert log_poisson_variance(sparse, 300.0)[1] < log_poisson_variance(sparse, 3000.0)[1]


def test_variance_rejects_bad_input():
    with pytest.raises(ValueError, match="depth"):
        log_poisson_variance([1.0], 0.0)
    with pytest.raises(ValueError, match="non-negative"):
        log_poisson_variance([-1.0], 100.0)


def test_technical_sigma_is_the_noise_beyond_the_reference():
    m = np.array([0.2, 1.0, 5.0, 50.0])
    std = np.array([0.3, 0.5, 0.8, 1.0])
    ref = 5000.0
    depths = np.array([250.0, 1000.0, 5000.0, 20000.0])
    sig = technical_sigma(depths, m, std, reference_depth=ref, floor=0.002)

    def v(d):
        return np.mean(log_poisson_error(m, d) / std**2)

    expected = np.sqrt(np.maximum([v(d) - v(ref) for d in depths], 0.002**2))
    np.testing.assert_allclose(sig, expected, rtol=0.01)
    assert sig[0] > sig[1] > sig[2]
    assert sig[2] == pytest.approx(0.002) and sig[3] == pytest.approx(0.002)  # at or above


def test_technical_sigma_rejects_bad_input():
    with pytest.raises(ValueError, match="positive"):
        technical_sigma([100.0, 0.0], [1.0], [1.0], reference_depth=100.0)
    with pytest.raises(ValueError, match="one value per gene"):
        technical_sigma([100.0], [1.0, 2.0], [1.0], reference_depth=100.0)
    with pytest.raises(ValueError, match="reference_depth"):
        technical_sigma([100.0], [1.0], [1.0], reference_depth=0.0)
