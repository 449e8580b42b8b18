"""Scoring denoisers of counts, and the simple ones to beat (pure functions on arrays).

Every denoiser here returns each cell's **expected expression per** ``target_sum`` **counts**
(cells x genes, linear, non-negative): what a deeper sequencing of the same cell would give on
average. Its log (``log1p``) is compared with deep truth where there is one.

* **Molecular cross-validation** (Batson et al. 2019): the shallow counts ``X`` split into two
  binomial halves ``X' + X''`` (each UMI in ``X'`` with probability ``p``); a denoiser sees
  ``X'`` only, and its expression of each cell, scaled to the depth of ``X''``, is scored on
  ``X''`` by the mean Poisson deviance (:func:`mcv_loss`, lower is better). ``X''`` is
  independent of ``X'`` given the cell, so copying noise does not pay.
* Against deep truth: per-cell and per-gene Pearson correlation of log values
  (:func:`correlations`), gene-gene correlation recovery (:func:`gene_correlation_recovery`),
  and whether cell types stay apart (:func:`cell_type_scores`: kNN accuracy, ARI).
* Without deep truth: gene-gene correlation recovery against the *other* MCV half
  (:func:`gene_correlation_recovery_mcv`), whose gene-gene correlations are corrected for
  counting noise.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score
from sklearn.neighbors import NearestNeighbors

from rnadiff.diffusion._counts import binomial_split, poisson_deviance


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def normalized(counts, target_sum: float = 1e4) -> np.ndarray:
    """Counts per ``target_sum`` of each cell (no denoising: the baseline of baselines)."""
    c = _dense(counts)
    total = np.maximum(c.sum(1, keepdims=True), 1.0)
    return c * (target_sum / total)


def thin(counts, rate: float, *, seed: int = 0) -> np.ndarray:
    """Each UMI kept with probability ``rate`` (the same cells sequenced shallower)."""
    import torch

    kept, _ = binomial_split(
        torch.as_tensor(_dense(counts)), rate, generator=torch.Generator().manual_seed(seed)
    )
    return kept.numpy().astype(np.int64)


def mcv_split(counts, *, p: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The two binomial halves ``(X', X'')`` of molecular cross-validation."""
    import torch

    kept, rest = binomial_split(
        torch.as_tensor(_dense(counts)), p, generator=torch.Generator().manual_seed(seed)
    )
    return kept.numpy().astype(np.int64), rest.numpy().astype(np.int64)


def mcv_loss(expression, held_out) -> float:
    """Mean Poisson deviance of the held-out half ``X''`` under a denoiser's expression of the
    other half, scaled to each cell's held-out depth: ``mu = e / sum(e) * sum(X'')``
    (molecular cross-validation; lower is better). Cells without held-out UMIs are left out;
    an expression of 0 for a counted gene is floored at 1e-8 of a count."""
    e = _dense(expression)
    y = _dense(held_out)
    depth = y.sum(1)
    keep = depth > 0
    e, y, depth = e[keep], y[keep], depth[keep]
    share = e / np.maximum(e.sum(1, keepdims=True), 1e-300)
    return poisson_deviance(share * depth[:, None], y)


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    return np.divide((a * b).sum(1), den, out=np.full(len(a), np.nan), where=den > 0)


def correlations(expression, truth) -> dict[str, float]:
    """Mean per-cell (over genes) and per-gene (over cells) Pearson correlation of
    ``log1p(expression)`` with ``log1p(truth)`` (both per the same total); genes or cells
    constant in either are left out."""
    a, b = np.log1p(_dense(expression)), np.log1p(_dense(truth))
    return {
        "cell_corr": float(np.nanmean(_pearson_rows(a, b))),
        "gene_corr": float(np.nanmean(_pearson_rows(a.T, b.T))),
    }


def gene_correlation_recovery(expression, truth, *, n_genes: int = 200) -> float:
    """Pearson correlation between the gene-gene correlations (upper triangle) of
    ``log1p(expression)`` and of ``log1p(truth)``, over the ``n_genes`` genes most expressed
    in the truth (constant genes left out)."""
    a, b = np.log1p(_dense(expression)), np.log1p(_dense(truth))
    genes = np.argsort(-b.mean(0), kind="stable")[:n_genes]
    genes = genes[(a[:, genes].std(0) > 0) & (b[:, genes].std(0) > 0)]
    if len(genes) < 3:
        return float("nan")
    iu = np.triu_indices(len(genes), k=1)
    ca = np.corrcoef(a[:, genes].T)[iu]
    cb = np.corrcoef(b[:, genes].T)[iu]
    return float(np.corrcoef(ca, cb)[0, 1])


def noise_corrected_correlations(
    counts, *, target_sum: float = 1e4
) -> tuple[np.ndarray, np.ndarray]:
    r"""Gene-gene correlations of the cells' expression, from shallow counts, corrected for
    counting noise: ``(correlations, usable)``.

    With ``y_cg = c_cg T / L_c`` (counts per ``T`` of a cell's depth ``L_c``) and Poisson
    counting given each cell's expression, the covariance of two genes across cells is that
    of the expression (counting noise is independent between genes), while a gene's variance
    carries the counting noise ``E[y_cg T / L_c]`` on top:

    .. math::

        \hat v_g = \operatorname{Var}_c(y_{cg}) - \operatorname{mean}_c(y_{cg} T / L_c),
        \qquad \hat r_{gh} = \operatorname{Cov}_c(y_{cg}, y_{ch}) / \sqrt{\hat v_g \hat v_h}

    (linear scale; clipped to [-1, 1]). ``usable``: genes with ``\hat v_g > 0``, whose
    expression varies beyond counting noise.
    """
    c = _dense(counts)
    depth = np.maximum(c.sum(1, keepdims=True), 1.0)
    y = c * (target_sum / depth)
    cov = np.cov(y, rowvar=False)
    noise = (y * (target_sum / depth)).mean(0)
    var = np.diag(cov) - noise
    usable = var > 0
    scale = np.sqrt(np.where(usable, var, np.nan))
    corr = np.clip(cov / np.outer(scale, scale), -1.0, 1.0)
    return corr, usable


def gene_correlation_recovery_mcv(expression, held_out, *, n_genes: int = 200) -> float:
    """Gene-gene correlation recovery without deep truth: Pearson correlation between the
    gene-gene correlations (upper triangle, linear scale) of a denoiser's expression of one
    MCV half and the noise-corrected ones of the other half
    (:func:`noise_corrected_correlations`), over the ``n_genes`` genes most counted in the
    held-out half among those that vary beyond counting noise. The halves are independent
    given the cells, so a denoiser that copies its input's noise does not score."""
    e = _dense(expression)
    truth, usable = noise_corrected_correlations(held_out)
    counted = _dense(held_out).sum(0)
    genes = np.argsort(-np.where(usable, counted, -np.inf), kind="stable")[:n_genes]
    genes = genes[usable[genes] & (e[:, genes].std(0) > 0)]
    if len(genes) < 3:
        return float("nan")
    iu = np.triu_indices(len(genes), k=1)
    ours = np.corrcoef(e[:, genes].T)[iu]
    theirs = truth[np.ix_(genes, genes)][iu]
    return float(np.corrcoef(ours, theirs)[0, 1])


def _pcs(log_x: np.ndarray, n_components: int, seed: int) -> np.ndarray:
    q = int(min(n_components, log_x.shape[0] - 1, log_x.shape[1]))
    return PCA(q, random_state=seed).fit_transform(log_x - log_x.mean(0))


def cell_type_scores(
    expression, labels, *, k: int = 15, n_components: int = 30, seed: int = 0
) -> dict[str, float]:
    """How well cell types stay apart after denoising: leave-one-out ``k``-nearest-neighbour
    accuracy of ``labels`` and the adjusted Rand index of k-means (as many clusters as
    labels), both in the first ``n_components`` principal components of ``log1p``."""
    labels = np.asarray(labels).astype(str)
    pcs = _pcs(np.log1p(_dense(expression)), n_components, seed)
    k = min(k, len(pcs) - 1)
    nearest = NearestNeighbors(n_neighbors=k).fit(pcs).kneighbors(return_distance=False)
    votes = labels[nearest]
    classes, codes = np.unique(labels, return_inverse=True)
    counts = np.stack([(votes == c).sum(1) for c in classes], axis=1)
    accuracy = float((counts.argmax(1) == codes).mean())
    clusters = KMeans(len(classes), n_init=4, random_state=seed).fit_predict(pcs)
    return {"knn_accuracy": accuracy, "ari": float(adjusted_rand_score(labels, clusters))}


# ------------------------------------------------------------------ simple denoisers
def pca_reconstruction(counts, *, n_components: int = 20, target_sum: float = 1e4, seed: int = 0):
    """Log-normalized counts reconstructed from their first ``n_components`` principal
    components (negative logs clipped at 0), as expression."""
    log_x = np.log1p(normalized(counts, target_sum))
    mean = log_x.mean(0)
    q = int(min(n_components, log_x.shape[0] - 1, log_x.shape[1]))
    pca = PCA(q, random_state=seed).fit(log_x - mean)
    recon = pca.inverse_transform(pca.transform(log_x - mean)) + mean
    return np.expm1(np.clip(recon, 0, None))


def knn_smoothing(
    counts, *, k: int = 15, n_components: int = 30, target_sum: float = 1e4, seed: int = 0
) -> np.ndarray:
    """Each cell's expression as the mean normalized expression of itself and its ``k - 1``
    nearest cells (Euclidean, first ``n_components`` principal components of log values)."""
    expr = normalized(counts, target_sum)
    pcs = _pcs(np.log1p(expr), n_components, seed)
    nearest = NearestNeighbors(n_neighbors=min(k, len(pcs))).fit(pcs).kneighbors(pcs)[1]
    return expr[nearest].mean(axis=1)


def magic_expression(counts, *, target_sum: float = 1e4, seed: int = 0) -> np.ndarray:
    """MAGIC (van Dijk et al. 2018; PyPI ``magic-impute``) with its defaults on square-root
    normalized counts, as its tutorial prepares them; squared back to expression. Raises
    ImportError when the package is not installed."""
    import magic

    sqrt = np.sqrt(normalized(counts, target_sum))
    op = magic.MAGIC(random_state=seed, n_jobs=1, verbose=0)
    out = np.asarray(op.fit_transform(sqrt), dtype=np.float64)
    return np.clip(out, 0, None) ** 2
