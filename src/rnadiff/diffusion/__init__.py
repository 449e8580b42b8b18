"""Pure diffusion maths (no parameters): noise schedules, EDM preconditioning and losses."""

from rnadiff.diffusion.loss import denoising_loss, edm_loss_weight
from rnadiff.diffusion.precond import edm_scalings
from rnadiff.diffusion.schedules import karras_sigmas, sample_training_sigmas

__all__ = [
    "denoising_loss",
    "edm_loss_weight",
    "edm_scalings",
    "karras_sigmas",
    "sample_training_sigmas",
]
