"""A prior for perturbations never seen in training, from the expression of their target genes.

A knock-out (or over-expression) of gene ``G`` that the model never saw is represented by the
perturbations of the seen genes whose expression co-varies most with ``G`` in the training
cells: its condition row is a softmax-weighted mix of their tokens, so its embedding is the
same mix of their learned embeddings. Genes that vary together across cells tend to sit in the
same pathway, and knocking out members of one pathway tends to have similar effects.

Whether that holds in a data set is measured, not assumed: :func:`fit_trust` predicts each seen
perturbation's measured effect from the others, leaving it out, by a blend of its co-expression
mix and the average of all other perturbations (weighted by their cells, the "mean perturbed
cell" of perturbation benchmarks), and picks the blend weight (the *trust* in co-expression)
with the smallest error. :func:`blend_prior` applies it to an unseen gene's weights.

A drug never seen in training is embedded from its structure by the network's learned
projection of its fingerprint. Whether structure predicts effects in a data set is measured
the same way: :func:`fit_structure_trust` predicts each seen drug's measured effect from the
others by a blend of the drugs most similar in structure (:func:`structure_prior`, Tanimoto
similarity of Morgan fingerprints) and the average of all others, and picks the trust with
the smallest leave-one-out error; :mod:`rnadiff.conditioning._unseen_drugs` moves an unseen
drug's predicted mean change to that blend.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rnadiff._errors import InputError

if TYPE_CHECKING:
    from rnadiff.data._covariates import CovariateRegistry

logger = logging.getLogger("rnadiff")

TRUST_GRID = tuple(round(0.1 * i, 1) for i in range(11))


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
    return top_softmax(sims, k=k, temperature=temperature)


def top_softmax(sims: Mapping[str, float], *, k: int, temperature: float) -> dict[str, float]:
    """Softmax weights (``temperature``) over the ``k`` most similar of ``sims``, most similar
    first; empty when ``sims`` is."""
    top = sorted(sims, key=sims.get, reverse=True)[:k]
    if not top:
        return {}
    logits = np.array([sims[t] for t in top]) / temperature
    w = np.exp(logits - logits.max())
    w /= w.sum()
    return {t: float(x) for t, x in zip(top, w, strict=True)}


def structure_prior(
    drug: str,
    candidates: Sequence[str],
    similarity: Callable[[str, str], float],
    *,
    k: int = 3,
    temperature: float = 0.1,
) -> dict[str, float]:
    """Weights over seen drug tokens most similar in structure to ``drug``.

    Parameters
    ----------
    drug
        The drug standing in the middle (left out, or never seen).
    candidates
        Seen drug tokens with a structure (``drug`` itself is skipped).
    similarity
        ``similarity(a, b)``: e.g. the Tanimoto similarity of their Morgan fingerprints.
    k, temperature
        As :func:`expression_prior`.

    Returns
    -------
    dict
        ``{seen token: weight}``, weights summing to 1, most similar first; empty without
        candidates.
    """
    sims = {t: float(similarity(drug, t)) for t in candidates if t != drug}
    return top_softmax(sims, k=k, temperature=temperature)


def blend_prior(
    similar: Mapping[str, float], shares: Mapping[str, float], trust: float
) -> dict[str, float]:
    """``trust`` x the co-expression weights plus ``1 - trust`` x every seen perturbation's share.

    Parameters
    ----------
    similar
        Weights from :func:`expression_prior` (summing to 1).
    shares
        ``{seen token: number of its training cells}`` (any non-negative weights; normalized).
    trust
        In [0, 1]; 1 returns ``similar``, 0 the shares alone.

    Returns
    -------
    dict
        ``{seen token: weight}``, weights summing to 1, largest first, zero weights left out.
    """
    if not 0 <= trust <= 1:
        raise ValueError(f"trust must be in [0, 1], got {trust}")
    total = float(sum(shares.values()))
    if total <= 0:
        raise ValueError("shares must contain a positive weight")
    out = {t: trust * w for t, w in similar.items()}
    for t, n in shares.items():
        out[t] = out.get(t, 0.0) + (1 - trust) * n / total
    return {t: float(w) for t, w in sorted(out.items(), key=lambda kv: -kv[1]) if w > 0}


def fit_trust(
    effects: Mapping[str, np.ndarray],
    shares: Mapping[str, float],
    genes: Sequence[str],
    vectors: np.ndarray,
    *,
    grid: Sequence[float] = TRUST_GRID,
    min_candidates: int = 3,
    **prior_kw,
) -> tuple[float | None, np.ndarray]:
    """How far to trust co-expression, fitted by leaving out each seen perturbation in turn.

    Every seen perturbation ``t`` whose token is one of ``genes`` is predicted, as if unseen,
    from the others: ``sum_j w_j effects[j]`` with ``w = blend_prior(expression_prior(t,
    others), shares of the others, trust)``. The trust in ``grid`` with the smallest mean
    squared error over those perturbations and all genes wins.

    Parameters
    ----------
    effects
        ``{seen token: its measured mean change from control}`` (vectors over genes, e.g. log
        expression).
    shares
        ``{seen token: number of its training cells}``; same keys as ``effects``.
    genes, vectors
        The model's genes and their :func:`gene_vectors`.
    grid
        Trust values tried, each in [0, 1].
    min_candidates
        Fewest left-out perturbations with a co-expression mix needed to fit; with fewer,
        nothing is fitted.
    **prior_kw
        Passed to :func:`expression_prior` (``k``, ``temperature``).

    Returns
    -------
    tuple
        The fitted trust (``None`` when too few perturbations could be left out) and the mean
        squared error at each grid value (empty when not fitted).
    """

    def similar(t: str, others: Sequence[str]) -> dict[str, float]:
        return expression_prior(t, {j: j for j in others}, genes, vectors, **prior_kw)

    return loo_trust(effects, shares, similar, grid=grid, min_candidates=min_candidates)


def fit_structure_trust(
    effects: Mapping[str, np.ndarray],
    shares: Mapping[str, float],
    molecules: Sequence[str],
    similarity: Callable[[str, str], float],
    *,
    grid: Sequence[float] = TRUST_GRID,
    min_candidates: int = 3,
    **prior_kw,
) -> tuple[float | None, np.ndarray]:
    """How far to trust structure, fitted by leaving out each seen drug in turn.

    As :func:`fit_trust`, with the drugs most similar in structure
    (:func:`structure_prior` over ``molecules``) in place of co-expression: every seen drug
    with a structure is predicted from the others by ``trust`` x its structure mix plus
    ``1 - trust`` x the others' shares.

    Parameters
    ----------
    effects, shares
        As :func:`fit_trust`: the perturbations of the average (e.g. every seen drug; those
        without a structure count in the average only).
    molecules
        The seen tokens that have a structure.
    similarity
        ``similarity(a, b)`` of two of ``molecules``.
    grid, min_candidates
        As :func:`fit_trust`.
    **prior_kw
        Passed to :func:`structure_prior` (``k``, ``temperature``).

    Returns
    -------
    tuple
        As :func:`fit_trust`.
    """
    molecules = [m for m in molecules if m in effects]

    def similar(t: str, others: Sequence[str]) -> dict[str, float]:
        if t not in molecules:
            return {}
        keep = set(others)
        pool = [m for m in molecules if m in keep]
        return structure_prior(t, pool, similarity, **prior_kw)

    return loo_trust(effects, shares, similar, grid=grid, min_candidates=min_candidates)


def loo_trust(
    effects: Mapping[str, np.ndarray],
    shares: Mapping[str, float],
    similar: Callable[[str, Sequence[str]], Mapping[str, float]],
    *,
    grid: Sequence[float] = TRUST_GRID,
    min_candidates: int = 3,
) -> tuple[float | None, np.ndarray]:
    """The trust in ``grid`` whose blend ``trust x similar(t, others) + (1 - trust) x the
    others' shares`` predicts each left-out ``t``'s effect with the smallest mean squared
    error (the loop of :func:`fit_trust` and :func:`fit_structure_trust`; ``similar``
    returns weights over ``others`` summing to 1, or nothing to skip ``t``)."""
    if set(effects) != set(shares):
        raise ValueError("effects and shares must have the same perturbations")
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 1 or not len(grid) or (grid < 0).any() or (grid > 1).any():
        raise ValueError("grid must be a non-empty list of values in [0, 1]")
    tokens = list(effects)
    E = np.stack([np.asarray(effects[t], dtype=np.float64) for t in tokens])
    n = np.array([float(shares[t]) for t in tokens])
    total, weighted = n.sum(), n @ E
    row = {t: i for i, t in enumerate(tokens)}
    errors, used = np.zeros(len(grid)), 0
    for i, t in enumerate(tokens):
        weights = similar(t, [j for j in tokens if j != t])
        if not weights or total - n[i] <= 0:
            continue
        # blend_prior(weights, shares of the others, trust) applied to the effects
        base = (weighted - n[i] * E[i]) / (total - n[i])
        mix = sum(w * E[row[j]] for j, w in weights.items())
        pred = base[None] + grid[:, None] * (mix - base)[None]
        errors += np.mean((pred - E[i][None]) ** 2, axis=1)
        used += 1
    if used < min_candidates:
        return None, np.zeros(0)
    errors /= used
    return float(grid[int(np.argmin(errors))]), errors


def prior_weights(
    gene: str,
    *,
    tokens: Sequence[str],
    control: str | None,
    genes: Sequence[str],
    vectors: np.ndarray | None,
    fit: Mapping | None,
) -> dict[str, float]:
    """The seen perturbation tokens standing in for the unseen ``gene`` (empty: none).

    The co-expression mix of :func:`expression_prior` over the seen tokens (all but the
    control), blended by :func:`blend_prior` with the fitted ``trust`` when ``fit`` has one.
    """
    if vectors is None:
        return {}
    candidates = {t: t for t in tokens if t != control}
    weights = expression_prior(gene, candidates, genes, vectors)
    trust = (fit or {}).get("trust")
    if weights and trust is not None:
        weights = blend_prior(weights, fit["shares"], trust)
    return weights


def soft_prior(
    registry: CovariateRegistry,
    obs: pd.DataFrame,
    *,
    genes: Sequence[str],
    weights_of: Callable[[str], dict[str, float]],
    has_prior: bool,
    use: bool,
) -> dict | None:
    """Soft encodings of perturbations never seen in training that are the model's
    ``genes``, each the mix ``weights_of(gene)`` of seen tokens (``use=False``: only say that
    the prior would help; ``has_prior``: the model has an expression prior)."""
    pkey = registry.perturbation_key
    if pkey is None or pkey not in obs:
        return None
    cov = registry[pkey]
    values = obs[pkey].dropna().astype(str).unique()
    unseen = sorted({p for v in values for p in cov.parts(v)} - set(cov.tokens))
    if not unseen:
        return None
    genes = set(genes)
    if not use:
        as_genes = [p for p in unseen if p in genes]
        if as_genes:
            raise InputError(
                f"unknown perturbation {as_genes[0]!r} in column {pkey!r}: never seen in "
                "training, but it is one of the model's genes; pass prior=True "
                "(--gene-prior) to predict it from the perturbations of the seen genes "
                "whose expression co-varies with it"
            )
        return None  # the registry names the unknown value
    if not has_prior:
        raise InputError("this model has no gene expression prior (saved by an older version)")
    mixes = {}
    for p in unseen:
        if p not in genes:
            raise InputError(
                f"no prior for perturbation {p!r}: it was never seen in training and is not "
                "one of the model's genes, so its expression cannot stand in for it"
            )
        weights = weights_of(p)
        if not weights:
            raise InputError(
                f"no prior for perturbation {p!r}: no seen perturbation targets a model gene"
            )
        mixes[p] = weights
        logger.info(
            "rnadiff: %r was never seen in training; expression prior: %s",
            p,
            " + ".join(f"{w:.2f} x {t}" for t, w in list(weights.items())[:5])
            + (f" + {len(weights) - 5} more" if len(weights) > 5 else ""),
        )
    return {pkey: mixes}
