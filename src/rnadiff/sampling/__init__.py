"""Samplers (pure functions sharing one signature) and guidance (denoiser wrappers)."""

from rnadiff.sampling._engine import SamplingEngine
from rnadiff.sampling._guidance import (
    classifier_free_guidance,
    combination_composition,
    compositional_guidance,
    effect_scaling,
    gradient_guidance,
    interaction_transfer,
    interpolated_covariate,
)
from rnadiff.sampling._inversion import encode
from rnadiff.sampling._samplers import (
    SAMPLERS,
    langevin_corrector,
    sample_dpmpp_2m,
    sample_euler,
    sample_heun,
    sample_langevin,
)
from rnadiff.sampling._transfer_plan import TransferPlan

__all__ = [
    "SAMPLERS",
    "SamplingEngine",
    "TransferPlan",
    "classifier_free_guidance",
    "combination_composition",
    "compositional_guidance",
    "effect_scaling",
    "encode",
    "gradient_guidance",
    "interaction_transfer",
    "interpolated_covariate",
    "langevin_corrector",
    "sample_dpmpp_2m",
    "sample_euler",
    "sample_heun",
    "sample_langevin",
]
