"""rnadiff: perturbation-aware, property-conditioned diffusion models of single-cell expression."""

__version__ = "0.1.0"

from rnadiff import datasets
from rnadiff.config import (
    DiffusionConfig,
    ModelConfig,
    NetworkConfig,
    PreprocessConfig,
    TrainConfig,
)
from rnadiff.errors import DatasetError, InputError, RNADiffError
from rnadiff.model import RNADiffusion

__all__ = [
    "DatasetError",
    "DiffusionConfig",
    "InputError",
    "ModelConfig",
    "NetworkConfig",
    "PreprocessConfig",
    "RNADiffError",
    "RNADiffusion",
    "TrainConfig",
    "__version__",
    "datasets",
]
