"""AnnData at the edges: input detection, validation, covariate registry, preprocessing,
gene selection, benchmark splits, the simulator and the dataset registry."""

from rnadiff.data._covariates import Covariate, CovariateRegistry, conditions_frame
from rnadiff.data._expression import Source, choose_source
from rnadiff.data._genes import gene_moments, pearson_residual_variance, select_genes
from rnadiff.data._inputs import InputInfo, detect_input, to_natural_log
from rnadiff.data._preprocessing import (
    PreprocessState,
    fit_preprocessing,
    log_expression,
    scale,
    unscale,
)
from rnadiff.data._splits import (
    Evaluation,
    Split,
    hsmm_time,
    kang9k_heldout,
    kang_loo_celltype,
    papalexi_clean,
    papalexi_seen,
    papalexi_unseen,
)

__all__ = [
    "Covariate",
    "CovariateRegistry",
    "Evaluation",
    "InputInfo",
    "PreprocessState",
    "Source",
    "Split",
    "choose_source",
    "conditions_frame",
    "detect_input",
    "fit_preprocessing",
    "gene_moments",
    "hsmm_time",
    "kang9k_heldout",
    "kang_loo_celltype",
    "log_expression",
    "papalexi_clean",
    "papalexi_seen",
    "papalexi_unseen",
    "pearson_residual_variance",
    "scale",
    "select_genes",
    "to_natural_log",
    "unscale",
]
