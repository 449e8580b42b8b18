"""Samplers (pure functions sharing one signature) and guidance (denoiser wrappers)."""

from rnadiff.sampling.guidance import classifier_free_guidance, compositional_guidance
from rnadiff.sampling.inversion import encode
from rnadiff.sampling.samplers import SAMPLERS, sample_dpmpp_2m, sample_euler, sample_heun

__all__ = [
    "SAMPLERS",
    "classifier_free_guidance",
    "compositional_guidance",
    "encode",
    "sample_dpmpp_2m",
    "sample_euler",
    "sample_heun",
]
