"""Neural networks only (``nn.Module``): the denoiser and its building blocks."""

from rnadiff.networks._denoiser import Denoiser
from rnadiff.networks._mlp import AdaLNBlock, ResidualMLP

__all__ = ["AdaLNBlock", "Denoiser", "ResidualMLP"]
