"""Output formatting: the AnnData that every method of the model returns.

One schema for every method (``generate``, ``predict``, ``denoise``, ``design``):

* ``X``: natural ``log1p`` of expression normalized to ``target_sum`` per cell, for every gene
  of the training data; ``uns['log1p'] = {'base': None}`` says so to scanpy (so
  ``sc.pp.log1p`` does not log it again);
* ``var``: ``rnadiff_modelled`` (False: the gene passed through, see
  :mod:`rnadiff.model._passthrough`), ``rnadiff_mean`` and ``rnadiff_std`` (the model's gene
  scale; NaN for genes not modelled);
* ``obs``: each cell's condition (the registered covariates) plus what the method adds; names
  unique (generated cells get ``<method>-<request hash>-<i>``, so outputs of different requests
  concatenate without clashes);
* ``uns['rnadiff']``: how the result was made: ``method``, the call's settings,
  ``rnadiff_version``, ``input`` (what the training data held), ``n_modelled_genes``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping

import anndata as ad
import numpy as np
import pandas as pd

from rnadiff._errors import InputError
from rnadiff._version import __version__
from rnadiff.sampling._transfer_plan import transfer_sources

logger = logging.getLogger("rnadiff")


def to_anndata(
    log_x: np.ndarray,
    obs: pd.DataFrame,
    info: dict,
    *,
    state,
    others: np.ndarray | None = None,
    names: pd.Index | None = None,
) -> ad.AnnData:
    """An AnnData of every training gene: ``log_x`` for the modelled genes, ``others`` (cells
    x unmodelled genes) for the rest; ``names`` the obs names (default: from a hash of
    ``info``)."""
    x = np.asarray(log_x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise InputError(
            f"the model produced {int((~np.isfinite(x)).sum())} non-finite values (guidance or "
            "another scale too strong?); nothing was written"
        )
    genes = list(state.genes)
    every = list(state.all_genes)
    if len(every) > len(genes):
        modelled = pd.Index(every).isin(genes)
        full = np.empty((len(x), len(every)), dtype=np.float32)
        full[:, modelled] = x[:, pd.Index(genes).get_indexer(np.array(every)[modelled])]
        full[:, ~modelled] = others if others is not None else 0.0
        x = full
    obs = obs.copy()
    for col in obs.columns:
        if obs[col].dtype == object:
            obs[col] = obs[col].astype("category")
    if names is None:
        digest = hashlib.blake2b(repr(sorted(info.items())).encode(), digest_size=4).hexdigest()
        names = pd.Index([f"{info['method']}-{digest}-{i}" for i in range(len(obs))])
    obs.index = pd.Index(names).astype(str)
    out = ad.AnnData(X=x, obs=obs, var=var_table(state))
    out.uns["log1p"] = {"base": None}
    out.uns["rnadiff"] = {
        **info,
        "rnadiff_version": __version__,
        "input": state.description,
        "n_modelled_genes": len(genes),
        # X is ln(1 + x) of expression x per this many per cell (None: unknown)
        "scale": state.scale,
    }
    return out


def var_table(state) -> pd.DataFrame:
    """``var`` of outputs: what the model knows about each gene."""
    every = pd.Index(list(state.all_genes), name=None)
    pos = pd.Index(list(state.genes)).get_indexer(every)
    modelled = pos >= 0
    var = pd.DataFrame(index=every)
    var["rnadiff_modelled"] = modelled
    var["rnadiff_mean"] = np.where(modelled, np.asarray(state.mean)[pos], np.nan).astype(np.float32)
    var["rnadiff_std"] = np.where(modelled, np.asarray(state.std)[pos], np.nan).astype(np.float32)
    return var


def jsonable(guidance):
    """Guidance as stored in ``uns``: a float or a plain dict."""
    return dict(guidance) if isinstance(guidance, Mapping) else float(guidance)


def plain(value):
    """JSON-friendly copy of a setup read back from ``.uns`` (arrays -> lists)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray | list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def sampling_info(engine, obs, plan, guidance, soft, calibrated: bool) -> dict:
    """The sampling settings and what they did, for ``uns['rnadiff']`` (``engine``: the
    one that sampled, which may know perturbations by their features)."""
    base = engine.registry.perturbation_key
    known = engine.registry[base].tokens if base is not None else ()
    by_features = [t for t in known if base is not None and t not in engine.trained_tokens]
    sources = transfer_sources(engine, obs, plan)
    for s in sources.values():  # a user should know where an effect never measured there came from
        if s["transferred"] == "interaction":
            logger.info(
                "rnadiff: %s never measured in %s: its parts as measured there, its interaction "
                "(what the pair adds to its parts) taken from %s",
                s["perturbation"],
                s["context"],
                s["source"],
            )
            continue
        r = s["relative_distance"]
        logger.info(
            "rnadiff: %s never measured in %s: its effect taken from %s (%s), scale %.2f",
            s["perturbation"],
            s["context"],
            s["source"],
            "measured in one context only: no spacing to compare with"
            if np.isnan(r)
            else f"relative distance {r:.2f}",
            s["scale"],
        )
    return {
        "guidance": jsonable(guidance),
        "transfer": plan.mode,
        "transferred_cells": int(plan.mask.sum()),
        "transfer_scale": plan.scale,
        "transfer_scale_by_distance": bool(plan.by_distance),
        "transfer_sources": sources,
        "interpolated_cells": {k: int(v[3].sum()) for k, v in engine.interpolation(obs).items()},
        "perturbation_prior": engine.used_prior(soft),
        "embedded_from_features": by_features,
        "effect_scales": engine.effect_scales_used(obs, calibrated),
    }


def output(model, x_log, obs, info, *, others=None, names=None) -> ad.AnnData:
    """The model's AnnData of ``x_log`` (modelled genes); unmodelled genes from ``others``, or
    (generated cells) their condition's training means."""
    if others is None and model.passthrough is not None:
        others = model.passthrough.for_conditions(model.registry, obs)
    return to_anndata(x_log, obs, info, state=model.preprocess, others=others, names=names)
