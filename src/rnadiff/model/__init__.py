"""The user-facing model bound to AnnData."""

from rnadiff.model._model import RNADiffusion

__all__ = ["RNADiffusion"]
