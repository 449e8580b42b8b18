"""Covariate encoders and the null value of each covariate (dropout, guidance)."""

from rnadiff.conditioning._encoders import ConditionEncoder, FourierEmbedding, SetEmbedding
from rnadiff.conditioning._nulls import drop_covariates, is_null, null_like, random_drop

__all__ = [
    "ConditionEncoder",
    "FourierEmbedding",
    "SetEmbedding",
    "drop_covariates",
    "is_null",
    "null_like",
    "random_drop",
]
