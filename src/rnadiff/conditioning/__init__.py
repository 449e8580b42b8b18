"""Covariate encoders, the null value of each covariate (dropout, guidance), the bookkeeping
of conditions, transfer planning, the priors of unseen perturbations (genes by
co-expression, drugs by structure) and the calibration functions (pure functions on
arrays)."""

from rnadiff.conditioning._calibration import effect_scales, spread_ratio, widen
from rnadiff.conditioning._encoders import (
    ConditionEncoder,
    DoseScale,
    FourierEmbedding,
    PerturbationEmbedding,
    PerturbationSpec,
    SetEmbedding,
)
from rnadiff.conditioning._nulls import drop_covariates, is_null, null_like, random_drop
from rnadiff.conditioning._prior import (
    blend_prior,
    expression_prior,
    fit_structure_trust,
    fit_trust,
    gene_vectors,
    prior_weights,
    structure_prior,
)
from rnadiff.conditioning._transfer import (
    context_of,
    distance_transfer_scale,
    interpolation_neighbours,
    measured_contexts,
    nearest_context_weights,
    relative_transfer_distance,
)
from rnadiff.conditioning._unseen_drugs import drug_weights

__all__ = [
    "ConditionEncoder",
    "DoseScale",
    "FourierEmbedding",
    "PerturbationEmbedding",
    "PerturbationSpec",
    "SetEmbedding",
    "blend_prior",
    "context_of",
    "distance_transfer_scale",
    "drop_covariates",
    "drug_weights",
    "effect_scales",
    "expression_prior",
    "fit_structure_trust",
    "fit_trust",
    "gene_vectors",
    "interpolation_neighbours",
    "is_null",
    "measured_contexts",
    "nearest_context_weights",
    "null_like",
    "prior_weights",
    "random_drop",
    "relative_transfer_distance",
    "spread_ratio",
    "structure_prior",
    "widen",
]
