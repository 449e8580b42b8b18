"""rnadiff: perturbation-aware, property-conditioned diffusion models of single-cell expression."""

from rnadiff import datasets, design, evaluation, fate
from rnadiff._config import (
    ConditioningConfig,
    DiffusionConfig,
    ModelConfig,
    NetworkConfig,
    PreprocessConfig,
    TrainConfig,
)
from rnadiff._errors import DatasetError, InputError, RNADiffError
from rnadiff._settings import settings
from rnadiff._settings import watch_loggers as _watch_loggers
from rnadiff._version import __version__
from rnadiff.model import RNADiffusion
from rnadiff.model._self_denoise import denoise

_watch_loggers()  # the loggers of the modules imported above: no handler, only a filter

__all__ = [
    "ConditioningConfig",
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
    "denoise",
    "design",
    "evaluation",
    "fate",
    "settings",
]
