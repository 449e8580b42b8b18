"""Pure diffusion maths (no parameters): noise schedules, EDM preconditioning and losses, and
the counting noise of log-normalized counts."""

from rnadiff.diffusion._count_noise import (
    log_poisson_error,
    log_poisson_variance,
    technical_sigma,
)
from rnadiff.diffusion._loss import denoising_loss, edm_loss_weight
from rnadiff.diffusion._precond import edm_scalings
from rnadiff.diffusion._schedules import karras_sigmas, sample_training_sigmas

__all__ = [
    "denoising_loss",
    "edm_loss_weight",
    "edm_scalings",
    "karras_sigmas",
    "log_poisson_error",
    "log_poisson_variance",
    "sample_training_sigmas",
    "technical_sigma",
]
