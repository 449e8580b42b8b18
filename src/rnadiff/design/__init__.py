"""Inverse design: phenotype specifications, guided design and perturbation ranking.

Build a specification from :class:`Markers`, :class:`Signature` and :class:`CellState`
(weighted sums allowed), then call :meth:`rnadiff.RNADiffusion.design` or
:meth:`rnadiff.RNADiffusion.rank_perturbations`.
"""

from rnadiff.design._phenotype import (
    BoundPhenotype,
    CellState,
    Combined,
    Markers,
    Phenotype,
    Signature,
    as_phenotype,
    fit_logistic,
)
from rnadiff.design._ranking import (
    combine_ranks,
    denoising_errors,
    log_uniform_levels,
    random_ranking_metrics,
    ranking_metrics,
    training_noise_levels,
)

__all__ = [
    "BoundPhenotype",
    "CellState",
    "Combined",
    "Markers",
    "Phenotype",
    "Signature",
    "as_phenotype",
    "combine_ranks",
    "denoising_errors",
    "fit_logistic",
    "log_uniform_levels",
    "random_ranking_metrics",
    "ranking_metrics",
    "training_noise_levels",
]
