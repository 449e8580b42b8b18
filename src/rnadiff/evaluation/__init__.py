"""Evaluation: metrics (pure functions on arrays), baselines, scoring AnnData, plots and the
benchmark harness's building blocks."""

from rnadiff.evaluation._baselines import (
    additive_baseline,
    combination_shift,
    control_baseline,
    linear_baseline,
    train_mean_baseline,
)
from rnadiff.evaluation._benchmark import (
    BenchConfig,
    Prepared,
    paired_comparison,
    prepare,
    run_split,
    score_split,
    summarize,
)
from rnadiff.evaluation._distances import energy_distance, knn_auc, mmd_rbf
from rnadiff.evaluation._metrics import (
    discrimination_score,
    pearson_delta,
    r2_mean,
    response_metrics,
    top_de_genes,
    wilcoxon_scores,
)
from rnadiff.evaluation._plots import plot_count_realism
from rnadiff.evaluation._realism import count_realism
from rnadiff.evaluation._score import score, score_conditions

__all__ = [
    "BenchConfig",
    "Prepared",
    "additive_baseline",
    "combination_shift",
    "control_baseline",
    "count_realism",
    "discrimination_score",
    "energy_distance",
    "knn_auc",
    "linear_baseline",
    "mmd_rbf",
    "paired_comparison",
    "pearson_delta",
    "plot_count_realism",
    "prepare",
    "r2_mean",
    "response_metrics",
    "run_split",
    "score",
    "score_conditions",
    "score_split",
    "summarize",
    "top_de_genes",
    "train_mean_baseline",
    "wilcoxon_scores",
]
