"""Counts out (``generate(..., counts=True)``, ``predict(..., counts=True)``).

A model trained on raw counts learns log-normalized cells, counting noise included. For
counts, the sampler stops at the counting noise level of the cells' depth, ``sigma_c``, and
takes the denoiser's estimate there: each gene's expected log-normalized value given the cell's
biological state, ``E[y_g]``. The technical noise is then put back as it arises, by counting:

    sigma_c = k * sqrt(v(d)),     v(d) = mean_g E[(y_g - log1p(m_g))^2] / std_g^2,         (1)

with ``d`` the median library size of the request, ``m_g`` the training mean expression and
``k = 2.5`` (:data:`COUNT_SIGMA_SCALE`); ``m_g`` solves ``E[log1p(c s / d)] = y_g`` for
``c ~ Poisson(m_g d / s)`` (:func:`rnadiff.diffusion._counts.invert_log_poisson_mean`), and

    L ~ the condition's library sizes,    c_g ~ Poisson(L m_g / sum_h m_h),                (2)
    X = log1p(c s / sum_g c_g).                                                            (3)

Library sizes (:class:`LibrarySizes`) are fitted on the training cells, per measured
condition, and stored in the checkpoint. A condition never measured takes the library sizes
of its context's control shifted by the perturbation's mean log change where it was measured;
a partly given condition mixes the measured conditions that match it. ``predict`` keeps each
source cell's rank: its depth's quantile among the source cells of its condition, mapped to
the same quantile of the target condition.

The stopping level ``k`` was checked on inner Kang splits (seed 0: the outer fold's held-out
CD4 T cells left out entirely; within its training cells, the stimulated B cells, then the
stimulated CD14+ Monocytes, held out and generated from noise): E-distance to the held-out
cells 4.85 / 4.40 / 4.25 / 4.39 at ``k`` = 1 / 1.5 / 2.5 / 4 (6.38 for the log-normalized
output without counts), library-size KS 0.09-0.10 and kNN real-vs-generated AUC 0.99-1.0 at
every ``k`` (generated cells remain easy to tell apart; docs: benchmarks/denoising). Poisson
rather than a negative binomial in eq. (2), by measurement (benchmarks/results/studies/
count_noise; Kang, the held-out types' control cells generated, 5 folds): the Poisson counts
inherit the cell-to-cell variation of the sampled expression and their Fano factors match the
real cells' at the median gene (log2 ratio +0.02; E-distance 0.151, kNN AUC 0.617); a negative
binomial with one theta of 10 gives +0.08 / 0.213 / 0.618, and one with each gene's theta
fitted on the raw counts counts the biological variation twice, +0.36 / 0.559 / 0.696 (it
ranks the most over-dispersed genes better, log Fano correlation 0.66 vs 0.51). Reading
``expm1(y)`` as
the expression instead of inverting eq. (1) would ignore Jensen's gap (rarely counted genes
would get too few counts) and was not measured either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from rnadiff._errors import InputError
from rnadiff.conditioning import _conditions as conditions
from rnadiff.diffusion._count_noise import error_curve
from rnadiff.diffusion._counts import invert_log_poisson_mean, log_normalize, sample_counts

if TYPE_CHECKING:
    from rnadiff.model._model import RNADiffusion

COUNT_SIGMA_SCALE = 2.5  # k of eq. (1): lowest E-distance of 1, 1.5, 2.5, 4 on inner Kang splits
N_QUANTILES = 33  # quantiles of log library size kept per condition


def _quantiles(log_depths: np.ndarray) -> np.ndarray:
    return np.quantile(log_depths, np.linspace(0, 1, N_QUANTILES))


@dataclass
class LibrarySizes:
    """Library sizes of the training cells: quantiles of log total counts per measured
    condition (categorical covariates), and over all cells."""

    rows: list[tuple]  # condition tuples, as conditions.condition_rows gives them
    quantiles: np.ndarray  # (n_conditions, N_QUANTILES) of log library size
    n_cells: np.ndarray  # cells per condition
    overall: np.ndarray  # (N_QUANTILES,)

    @classmethod
    def fit(cls, registry, obs: pd.DataFrame, depths: np.ndarray) -> LibrarySizes:
        log_d = np.log(np.asarray(depths, dtype=np.float64))
        rows = conditions.condition_rows(registry, obs)
        groups: dict[tuple, list[int]] = {}
        for i, row in enumerate(rows):
            if row and None not in row:
                groups.setdefault(row, []).append(i)
        keys = sorted(groups)
        q = np.array([_quantiles(log_d[groups[k]]) for k in keys]).reshape(-1, N_QUANTILES)
        n = np.array([len(groups[k]) for k in keys], dtype=np.int64)
        return cls(keys, q, n, _quantiles(log_d))

    def to_json(self) -> dict:
        return {
            "rows": [list(r) for r in self.rows],
            "quantiles": self.quantiles.tolist(),
            "n_cells": self.n_cells.tolist(),
            "overall": self.overall.tolist(),
        }

    @classmethod
    def from_json(cls, d: dict) -> LibrarySizes:
        q = np.asarray(d["quantiles"], dtype=np.float64).reshape(-1, N_QUANTILES)
        rows = [tuple(r) for r in d["rows"]]
        return cls(rows, q, np.asarray(d["n_cells"]), np.asarray(d["overall"], dtype=float))

    def quantile_function(self, row: tuple, ip: int | None, control: str | None) -> np.ndarray:
        """Quantiles of log library size of the condition ``row`` (None: unset).

        Measured: its own. A perturbation in a context where it was never measured: the
        context's control shifted by the perturbation's mean log change over the contexts
        where both were measured. Partly given: the measured conditions that match, mixed
        by their cells (quantiles of the pooled draws). Nothing matches: every cell."""
        index = {r: i for i, r in enumerate(self.rows)}
        if row in index:
            return self.quantiles[index[row]]
        if row and ip is not None and None not in row and control is not None:
            base = (*row[:ip], control, *row[ip + 1 :])
            if base in index:
                shifts = []
                for r, i in index.items():
                    c = (*r[:ip], control, *r[ip + 1 :])
                    if r[ip] == row[ip] and c in index:
                        shifts.append(self.quantiles[i].mean() - self.quantiles[index[c]].mean())
                return self.quantiles[index[base]] + (np.mean(shifts) if shifts else 0.0)
        match = [
            i
            for r, i in index.items()
            if len(r) == len(row) and all(v is None or v == w for v, w in zip(row, r, strict=True))
        ]
        if not match:
            return self.overall
        # a mixture: each matching condition's quantile function, weighted by its cells
        u = np.linspace(0, 1, 257)
        draws = np.concatenate(
            [
                np.repeat(np.interp(u, np.linspace(0, 1, N_QUANTILES), self.quantiles[i]), n)
                for i, n in zip(match, self.n_cells[match], strict=True)
            ]
        )
        return _quantiles(draws)


def _levels(u: np.ndarray, q: np.ndarray) -> np.ndarray:
    return np.exp(np.interp(u, np.linspace(0, 1, N_QUANTILES), q))


def library_sizes(
    model: RNADiffusion, obs: pd.DataFrame, rng, *, source_depths=None, source_obs=None
) -> np.ndarray:
    """Each cell's library size: drawn from its condition's distribution, or (``predict``:
    ``source_depths`` and ``source_obs`` given) the same quantile of the target condition as
    its own depth among the source cells of its source condition."""
    libs = fitted(model)
    registry = model.registry
    rows = conditions.condition_rows(registry, obs)
    cats = [c.key for c in registry.covariates if c.categorical]
    ip = cats.index(registry.perturbation_key) if registry.perturbation_key in cats else None
    if source_depths is None:
        u = rng.uniform(size=len(obs))
    else:  # each source cell's rank among the cells of its source condition
        group = pd.Series([repr(r) for r in conditions.condition_rows(registry, source_obs)])
        ranks = pd.Series(np.asarray(source_depths, dtype=float)).groupby(group).rank(pct=True)
        sizes = group.map(group.value_counts()).to_numpy()
        u = np.clip(ranks.to_numpy() - 0.5 / sizes, 0, 1)  # midpoints of the ranks
    out = np.empty(len(obs))
    for row in set(rows):
        where = np.array([r == row for r in rows])
        q = libs.quantile_function(row, ip, registry.control)
        out[where] = _levels(u[where], q)
    return np.maximum(np.round(out), 1.0)


def fitted(model: RNADiffusion) -> LibrarySizes | None:
    """The model's library sizes: fitted on its training cells when first needed (raw counts
    only), or loaded with it; None when neither is possible."""
    found = getattr(model, "_library_sizes", None)
    if found is None and model.adata is not None and model.preprocess.input_type == "counts":
        from rnadiff.data._expression import matrix
        from rnadiff.data._preprocessing import totals
        from rnadiff.model._data import source_for

        M, _ = matrix(model.adata, source_for(model, model.adata, None))
        found = LibrarySizes.fit(model.registry, model.adata.obs, totals(M))
        model._library_sizes = found
    return found


def check_counts(model: RNADiffusion) -> None:
    """``counts=True`` needs a model trained on raw counts, saved with library sizes."""
    if model.preprocess.input_type != "counts" or model.preprocess.expr_mean is None:
        raise InputError(
            "counts=True needs a model trained on raw counts (integers); this one was trained "
            f"on {model.preprocess.description}"
        )
    if fitted(model) is None:
        raise InputError(
            "counts=True needs the library sizes of the training cells, which this model was "
            "saved without (an older rnadiff); retrain it to generate counts"
        )


def count_sigma(model: RNADiffusion, depths: np.ndarray) -> float:
    """The noise level the sampler stops at for counts (eq. 1 of this module)."""
    state = model.preprocess
    d = float(np.median(depths))
    _, v = error_curve(state.expr_mean, state.std, lo=d, hi=d, target_sum=state.target_sum)
    floor = 2 * model.config.diffusion.sigma_min
    return max(COUNT_SIGMA_SCALE * float(np.sqrt(v[0])), floor)


def for_generate(model: RNADiffusion, frame: pd.DataFrame, n_cells: int, kw: dict):
    """``generate``'s request with ``kw['counts']`` (popped): each cell's library size (None
    without counts); ``kw['sigma_min']`` set to the level the sampler stops at."""
    if not kw.pop("counts", False):
        return None
    check_counts(model)
    rows = frame.loc[frame.index.repeat(n_cells)]  # the cells engine.sample makes
    depths = library_sizes(model, rows, np.random.default_rng([kw["seed"], 29]))
    kw["sigma_min"] = count_sigma(model, depths)
    return depths


def for_predict(model: RNADiffusion, engine, source, obs_src, obs_tgt, sigmas, kw: dict):
    """``predict``'s decoding with ``kw['counts']``: ``(library sizes, decoding noise
    levels)``; without counts ``(None, sigmas)``. Source cells with raw counts keep their
    depth's rank (mapped to the target condition); others draw theirs."""
    if not kw.get("counts"):
        return None, sigmas
    rng = np.random.default_rng([kw["seed"], 31])
    source_depths = None
    if model.preprocess.input_type == "counts":
        from rnadiff.data._expression import matrix
        from rnadiff.data._inputs import detect_input
        from rnadiff.data._preprocessing import totals
        from rnadiff.model._data import source_for

        M, _ = matrix(source, source_for(model, source, kw["layer"]))
        if detect_input(M).kind == "counts":
            source_depths = totals(M)
    depths = (
        library_sizes(model, obs_tgt, rng, source_depths=source_depths, source_obs=obs_src)
        if source_depths is not None
        else library_sizes(model, obs_tgt, rng)
    )
    level = count_sigma(model, depths)
    return depths, engine.sigmas(kw["steps"], sigma_max=float(sigmas[0]), sigma_min=level)


def with_counts(
    model: RNADiffusion, result: ad.AnnData, depths: np.ndarray | None, seed: int
) -> ad.AnnData:
    """``result`` (the sampler's estimates at ``sigma_c``, log-normalized, every gene) made
    counts: ``layers['counts']`` (eqs. 1-2 of this module), ``X`` their log-normalized values
    (eq. 3) and ``obs['total_counts']``; ``depths`` None: ``result`` as it is."""
    if depths is None:
        return result
    state = model.preprocess
    rng = np.random.default_rng([seed, 23])
    y = np.asarray(result.X, dtype=np.float64)
    expr = invert_log_poisson_mean(y, depths, target_sum=state.target_sum)
    counts = sample_counts(expr, depths, rng=rng)
    result.X = log_normalize(counts, state.target_sum)
    result.layers["counts"] = sp.csr_matrix(counts.astype(np.int32))
    result.obs["total_counts"] = counts.sum(axis=1)
    result.uns["rnadiff"] = {
        **result.uns["rnadiff"],
        "counts": {
            "count_sigma_scale": COUNT_SIGMA_SCALE,
            "library_size_median": float(np.median(depths)),
            "model": "Poisson at the condition's library sizes",
        },
    }
    return result
