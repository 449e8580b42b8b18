"""Neural networks only (``nn.Module``): the denoiser and its building blocks."""

from rnadiff.models.denoiser import Denoiser
from rnadiff.models.mlp import AdaLNBlock, ResidualMLP

__all__ = ["AdaLNBlock", "Denoiser", "ResidualMLP"]
