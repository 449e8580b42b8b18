"""A prior for perturbations never seen in training, from the expression of their target genes.

A knock-out (or over-expression) of gene ``G`` that the model never saw is represented by the
perturbations of the seen genes whose expression co-varies most with ``G`` in the training
cells: its condition row is a softmax-weighted mix of their tokens, so its embedding is the
same mix of their learned embeddings. Genes that vary together across cells tend to sit in the
same pathway, and knocking out members of one pathway tends to have similar effects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def gene_vectors(x: np.ndarray, *, n_components: int = 20) -> np.ndarray:
    """Genes embedded by their loadings on the principal axes of the cells.

    Parameters
    ----------
    x
        Cells x genes, each gene centered and scaled (the model's space).
    n_components
        Principal axes kept.

    Returns
    -------
    numpy.ndarray
        ``(n_genes, k)``: loadings times singular values, so that the cosine similarity of two
        genes' vectors is their correlation across cells within the kept axes.
    """
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0)
    k = max(1, min(n_components, *x.shape))
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    return (vt[:k].T * s[:k]).astype(np.float32)


def expression_prior(
    gene: str,
    candidates: Mapping[str, str],
    genes: Sequence[str],
    vectors: np.ndarray,
    *,
    k: int = 3,
    temperature: float = 0.1,
) -> dict[str, float]:
    """Weights over seen perturbation tokens standing in for the unseen gene ``gene``.

    Parameters
    ----------
    gene
        Target gene of the unseen perturbation; must be one of ``genes``.
    candidates
        ``{seen token: its target gene}`` for seen perturbations whose gene is in ``genes``.
    genes, vectors
        The model's genes and their :func:`gene_vectors`.
    k
        Most similar seen genes used.
    temperature
        Softmax temperature over their cosine similarities.

    Returns
    -------
    dict
        ``{seen token: weight}``, weights summing to 1, most similar first; empty when no
        candidate exists.
    """
    index = {g: i for i, g in enumerate(genes)}
    pool = {t: g for t, g in candidates.items() if g in index and g != gene}
    if gene not in index or not pool:
        return {}
    v = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sims = {t: float(v[index[gene]] @ v[index[g]]) for t, g in pool.items()}
    top = sorted(sims, key=sims.get, reverse=True)[:k]
    logits = np.array([sims[t] for t in top]) / temperature
    w = np.exp(logits - logits.max())
    w /= w.sum()
    return {t: float(x) for t, x in zip(top, w, strict=True)}
