"""rnadiff: perturbation-aware, property-conditioned diffusion models of single-cell expression."""

from rnadiff import datasets
from rnadiff._config import (
    DiffusionConfig,
    ModelConfig,
    NetworkConfig,
    PreprocessConfig,
    TrainConfig,
)
from rnadiff._errors import DatasetError, InputError, RNADiffError
from rnadiff._logging import configure_logger as _configure_logger
from rnadiff._version import __version__
from rnadiff.model import RNADiffusion

_configure_logger()

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
