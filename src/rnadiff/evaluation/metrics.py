"""Metrics of predicted perturbation responses: pure functions on arrays (cells x genes).

All expression inputs are log-normalized values of the same genes in the same order.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def _mean(x) -> np.ndarray:
    x = np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float64)
    return x.mean(axis=0) if x.ndim == 2 else x


def r2_mean(pred, real) -> float:
    """Coefficient of determination of the real gene means by the predicted gene means.

    ``1 - sum (real - pred)^2 / sum (real - mean(real))^2`` over genes (as sklearn's
    ``r2_score``; stricter than the squared Pearson correlation scGen reports: an offset or a
    wrong scale lowers it). Inputs are cell matrices or mean vectors.
    """
    p, r = _mean(pred), _mean(real)
    ss_tot = ((r - r.mean()) ** 2).sum()
    if ss_tot == 0:
        return float("nan")
    return float(1 - ((r - p) ** 2).sum() / ss_tot)


def pearson_delta(pred, real, control) -> float:
    """Pearson correlation of predicted and real change of gene means from the real control."""
    c = _mean(control)
    dp, dr = _mean(pred) - c, _mean(real) - c
    if dp.std() == 0 or dr.std() == 0:
        return float("nan")
    return float(np.corrcoef(dp, dr)[0, 1])


def wilcoxon_scores(group, reference) -> np.ndarray:
    """Per-gene Wilcoxon rank-sum z-scores of ``group`` vs ``reference`` (tie-corrected).

    Positive: higher in ``group``. Ranking genes by ``|z|`` is how scanpy's
    ``rank_genes_groups(method="wilcoxon")`` orders differentially expressed genes.
    """
    a = np.asarray(group.toarray() if hasattr(group, "toarray") else group, dtype=np.float64)
    b = np.asarray(
        reference.toarray() if hasattr(reference, "toarray") else reference, dtype=np.float64
    )
    n1, n2 = a.shape[0], b.shape[0]
    ranks = stats.rankdata(np.vstack([a, b]), axis=0)
    u = ranks[:n1].sum(axis=0) - n1 * (n1 + 1) / 2
    n = n1 + n2
    # tie correction: sum over tied groups of (t^3 - t), per gene
    tie = np.array([_tie_term(ranks[:, j]) for j in range(ranks.shape[1])])
    var = n1 * n2 / 12 * ((n + 1) - tie / (n * (n - 1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (u - n1 * n2 / 2) / np.sqrt(var)
    return np.nan_to_num(z)


def _tie_term(ranks: np.ndarray) -> float:
    _, counts = np.unique(ranks, return_counts=True)
    return float((counts**3 - counts).sum())


def top_de_genes(group, reference, n: int) -> np.ndarray:
    """Indices of the ``n`` genes most differentially expressed (largest ``|z|``), best first."""
    z = wilcoxon_scores(group, reference)
    return np.argsort(-np.abs(z), kind="stable")[:n]


def response_metrics(pred, real, control, *, top_n: tuple[int, ...] = (100,)) -> dict[str, float]:
    """R² of means and Pearson delta on all genes and on the top-N DE genes of the real response.

    The DE genes come from real perturbed vs real control cells only, never from predictions.
    """
    out = {
        "r2_mean_all": r2_mean(pred, real),
        "pearson_delta_all": pearson_delta(pred, real, control),
    }
    order = top_de_genes(real, control, max(top_n))
    for n in top_n:
        g = order[:n]
        p, r, c = _mean(pred)[g], _mean(real)[g], _mean(control)[g]
        out[f"r2_mean_top{n}"] = r2_mean(p, r)
        out[f"pearson_delta_top{n}"] = pearson_delta(p, r, c)
    return out
