"""Metrics of predicted perturbation responses: pure functions on arrays (cells x genes).

All expression inputs are log-normalized values of the same genes in the same order. Mean and
DE metrics live here; distances between populations (E-distance, MMD, kNN AUC) and the PCA
space they are computed in live in :mod:`rnadiff.evaluation._distances`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from scipy import stats

from rnadiff.evaluation._distances import (
    PCASpace,
    _dense,
    _energy_distances,
    fit_pca,
    knn_auc,
    median_bandwidths,
    mmd_rbf,
    project,
)


def _mean(x) -> np.ndarray:
    x = _dense(x)
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


def mse_mean(pred, real) -> float:
    """Mean squared error of the predicted gene means, ``mean_g (pred_g - real_g)^2``.

    Inputs are cell matrices or mean vectors. Unlike :func:`r2_mean` it is not scaled by the
    spread of the real means, so it stays defined when all genes have the same mean.
    """
    p, r = _mean(pred), _mean(real)
    if p.shape != r.shape:
        raise ValueError(f"pred has {p.shape} gene means, real {r.shape}")
    return float(((p - r) ** 2).mean())


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
    a, b = _dense(group), _dense(reference)
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


def response_metrics(
    pred,
    real,
    control,
    *,
    top_n: tuple[int, ...] = (100,),
    distributional: bool = False,
    pca: PCASpace | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """R² of means and Pearson delta on all genes and on the top-N DE genes of the real response.

    The DE genes come from real perturbed vs real control cells only, never from predictions.

    Parameters
    ----------
    pred, real, control
        Predicted, real perturbed and real control cells (cells x genes).
    top_n
        Sizes of the DE gene sets: keys ``r2_mean_top{n}`` and ``pearson_delta_top{n}``.
        The benchmark's names ``r2_mean_top20``, ``r2_mean_top100`` and
        ``pearson_delta_top100`` need ``top_n=(20, 100)``.
    distributional
        Also return :func:`population_metrics` (``mse_mean``, ``edistance``,
        ``edistance_pertpy``, ``mmd``, ``de_overlap_top20``, ``de_overlap_top100``,
        ``direction_agreement_top100``, ``knn_auc``); ``pred`` must then hold cells, not a
        mean vector.
    pca, seed
        Passed to :func:`population_metrics` when ``distributional``.

    Returns
    -------
    dict
        ``r2_mean_all``, ``pearson_delta_all``, ``r2_mean_top{n}``, ``pearson_delta_top{n}``,
        and the population metrics when asked for.
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
    if distributional:
        out |= population_metrics(pred, real, control, pca=pca, seed=seed)
    return out


def de_overlap(pred, real, control, *, n: int = 100) -> float:
    """Fraction of the real top-``n`` DE genes that are also among the predicted top-``n``.

    Both sets are ranked by :func:`top_de_genes` against the same real control cells:
    ``|top_n(pred vs control) & top_n(real vs control)| / n`` (``n`` capped at the number of
    genes). 1.0 for ``pred`` equal to ``real``. ``pred`` must hold cells (a Wilcoxon test
    needs them). The "common DEGs" of scPerturBench and the DE overlap of cell-eval (Virtual
    Cell Challenge) are of this form.
    """
    real_top = top_de_genes(real, control, n)
    pred_top = top_de_genes(pred, control, n)
    return _overlap(pred_top, real_top)


def _overlap(pred_top: np.ndarray, real_top: np.ndarray) -> float:
    return len(np.intersect1d(pred_top, real_top)) / len(real_top)


def direction_agreement(pred, real, control, *, n: int = 100) -> float:
    """Fraction of the real top-``n`` DE genes whose predicted change has the real sign.

    The changes are ``mean(pred) - mean(control)`` and ``mean(real) - mean(control)``, both
    from the real control; a gene agrees when the two signs are equal (a zero change only
    agrees with a zero change). ``pred`` may be cells or a mean vector.
    """
    return _direction_agreement(pred, real, control, top_de_genes(real, control, n))


def _direction_agreement(pred, real, control, genes: np.ndarray) -> float:
    c = _mean(control)[genes]
    dp, dr = _mean(pred)[genes] - c, _mean(real)[genes] - c
    return float(np.mean(np.sign(dp) == np.sign(dr)))


def discrimination_score(
    pred_by_condition: Mapping[str, object],
    real_by_condition: Mapping[str, object],
    control,
    *,
    metric: Literal["l1", "l2"] = "l1",
    exclude: Mapping[str, Sequence[int]] | None = None,
) -> tuple[dict[str, float], float]:
    """How well each predicted response singles out its own real condition among all real ones.

    After the perturbation discrimination score of cell-eval (Virtual Cell Challenge, Roohani
    et al. 2025). For each predicted condition ``k``: the distance (L1 or Euclidean) from its
    mean change ``mean(pred_k) - mean(control)`` to every real mean change
    ``mean(real_j) - mean(control)``, all from the same real control; ``r_k`` is the number
    of other real conditions strictly closer than real ``k`` plus half of those exactly as
    close; the score is ``1 - r_k / (N - 1)`` with ``N`` real conditions. 1.0: real ``k`` is the
    closest; 0.0: it is the farthest. (cell-eval reports ``1 - r_k / N``, whose worst is
    ``1 / N``.) cell-eval leaves each knock-out's target gene out of its own comparison, because
    a knock-down of the target itself says nothing about the response: pass ``exclude`` to do
    the same.

    Parameters
    ----------
    pred_by_condition
        Predicted cells (or mean vectors) per condition; every key must be in
        ``real_by_condition``.
    real_by_condition
        Real cells (or mean vectors) per condition, at least two conditions: the candidates.
    control
        Real control cells shared by all conditions.
    metric
        ``"l1"`` (cell-eval's default) or ``"l2"``.
    exclude
        Gene (column) indices left out of the distances of each predicted condition, e.g. the
        target genes of a knock-out; conditions not in it use every gene.

    Returns
    -------
    tuple
        The score per predicted condition, and their mean.
    """
    names = list(real_by_condition)
    if len(names) < 2:
        raise ValueError("discrimination needs at least two real conditions")
    unknown = set(pred_by_condition) - set(names)
    if unknown:
        raise ValueError(f"predicted conditions without real cells: {sorted(unknown)}")
    if not pred_by_condition:
        raise ValueError("no predicted conditions")
    if metric not in ("l1", "l2"):
        raise ValueError(f"metric must be 'l1' or 'l2', got {metric!r}")
    c = _mean(control)
    real_change = np.stack([_mean(real_by_condition[k]) - c for k in names])
    exclude = dict(exclude or {})
    scores = {}
    for k, pred in pred_by_condition.items():
        diff = real_change - (_mean(pred) - c)
        drop = np.asarray(exclude.get(k, ()), dtype=np.int64)
        if drop.size:
            if drop.min() < -diff.shape[1] or drop.max() >= diff.shape[1]:
                raise ValueError(f"{k}: excluded gene index out of range for {diff.shape[1]} genes")
            if np.unique(drop % diff.shape[1]).size == diff.shape[1]:
                raise ValueError(f"{k}: every gene is excluded")
            diff = np.delete(diff, drop, axis=1)
        d = np.abs(diff).sum(1) if metric == "l1" else np.sqrt((diff**2).sum(1))
        own = names.index(k)
        others = np.delete(d, own)
        rank = (others < d[own]).sum() + 0.5 * (others == d[own]).sum()
        scores[k] = float(1 - rank / (len(names) - 1))
    return scores, float(np.mean(list(scores.values())))


def target_gene_columns(
    labels: Sequence[str], genes: Sequence[str], *, sep: str = "+"
) -> dict[str, list[int]]:
    """Per perturbation label, the columns in ``genes`` of its parts that are genes (``A+B``:
    A and B), for :func:`discrimination_score`'s ``exclude``; labels without any get ``[]``."""
    where = {g: i for i, g in enumerate(genes)}
    return {label: [where[p] for p in label.split(sep) if p in where] for label in labels}


def population_metrics(
    pred,
    real,
    control,
    *,
    pca: PCASpace | None = None,
    de_top_n: tuple[int, ...] = (20, 100),
    direction_top_n: int = 100,
    knn_k: int = 10,
    max_cells: int = 5000,
    seed: int = 0,
) -> dict[str, float]:
    """Metrics that compare predicted and real cells as populations, not only their means.

    Parameters
    ----------
    pred, real, control
        Predicted, real perturbed and real control cells (cells x genes, at least 2 each).
    pca
        Space of the population distances. Default: :func:`fit_pca` (50 axes) on the
        predicted and real cells pooled (the subsampled cells that are compared), so both
        are equally in the sample the axes were fitted on. A space fitted on the real cells
        alone (or with the control) also fits their own noise: a second sample of the very
        same real population then lies measurably far from them (on Kang 2018 stimulated B
        cells, half of them against the other half: E-distance 2.8 in a space fitted on one
        half and the control cells, 0.00 in the pooled space), and predictions made from
        the control cells (counterfactual, additive) look better than new cells.
    de_top_n
        Sizes of the DE overlaps: keys ``de_overlap_top{n}``.
    direction_top_n
        Size of the DE set of ``direction_agreement_top{n}``.
    knn_k
        Neighbours of :func:`knn_auc`.
    max_cells
        Cells per population at most for the PCA-space distances (a seeded subsample).
    seed
        Seed of the subsampling.

    Returns
    -------
    dict
        ``mse_mean`` (gene space); in the PCA space: ``edistance``
        (:func:`energy_distance`, the unbiased U-statistic: about 0 for a new sample of the
        real population, whatever the number of cells), ``edistance_pertpy`` (the same with
        the self-pairs in the within means, ``kind="pertpy"``: the number pertpy and
        cell-eval report for these cells in this space; above ``edistance`` by an amount that
        shrinks with the number of cells, so it is not comparable across population sizes),
        ``mmd`` (:func:`mmd_rbf`, bandwidths from the real cells' median distance) and
        ``knn_auc`` (:func:`knn_auc`); ``de_overlap_top{n}`` and
        ``direction_agreement_top{n}`` on the real top DE genes.
    """
    pred_c, real_c, ctrl_c = _dense(pred), _dense(real), _dense(control)
    for name, a in (("pred", pred_c), ("real", real_c), ("control", ctrl_c)):
        if a.ndim != 2 or a.shape[0] < 2:
            raise ValueError(f"{name} must hold at least 2 cells, got shape {a.shape}")
    out = {"mse_mean": mse_mean(pred_c, real_c)}

    rng = np.random.default_rng(seed)
    sp, sr = (a[rng.permutation(len(a))[:max_cells]] for a in (pred_c, real_c))
    if pca is None:  # pooled: both populations in-sample alike (see ``pca`` above)
        pca = fit_pca(np.vstack([sp, sr]), n_components=50, seed=seed)
    zp, zr = project(sp, pca), project(sr, pca)
    e = _energy_distances(zp, zr, kinds=("u", "pertpy"))
    out["edistance"], out["edistance_pertpy"] = e["u"], e["pertpy"]
    out["mmd"] = mmd_rbf(zp, zr, bandwidths=median_bandwidths(zr))

    n_max = max(*de_top_n, direction_top_n)
    real_top = top_de_genes(real_c, ctrl_c, n_max)  # stable order: [:n] is the top-n
    pred_top = top_de_genes(pred_c, ctrl_c, max(de_top_n))
    for n in de_top_n:
        out[f"de_overlap_top{n}"] = _overlap(pred_top[:n], real_top[:n])
    out[f"direction_agreement_top{direction_top_n}"] = _direction_agreement(
        pred_c, real_c, ctrl_c, real_top[:direction_top_n]
    )
    out["knn_auc"] = knn_auc(zr, zp, k=knn_k, max_cells=max_cells, seed=seed)
    return out
