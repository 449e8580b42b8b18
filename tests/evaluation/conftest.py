import numpy as np
import pytest


@pytest.fixture
def populations():
    """Control cells, perturbed cells with 5 genes shifted, and the shift (known answers)."""
    rng = np.random.default_rng(0)
    control = rng.gamma(2.0, 0.5, size=(300, 40))
    shift = np.zeros(40)
    shift[:5] = [2.0, -1.0, 1.5, 0.8, -0.6]
    real = rng.gamma(2.0, 0.5, size=(250, 40)) + shift
    return control, real, shift
