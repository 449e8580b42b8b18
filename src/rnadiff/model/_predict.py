"""Counterfactual prediction (``RNADiffusion.predict``): one target, or a stack of them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anndata as ad
import pandas as pd
import torch

from rnadiff.conditioning import _conditions as conditions
from rnadiff.conditioning._calibration import widen
from rnadiff.data._covariates import numeric_value
from rnadiff.model._data import other_genes
from rnadiff.model._output import output, sampling_info

if TYPE_CHECKING:
    from rnadiff.model._model import RNADiffusion


def targets(model: RNADiffusion, perturbation) -> list:
    """The perturbations a ``predict`` call asks for: one, a list, or ``"all"`` (every
    perturbation the model knows but the control); ``[None]`` for none."""
    from rnadiff._errors import InputError

    reg = model.registry
    if perturbation is None:
        return [None]
    if reg.perturbation_key is None:
        raise InputError("the model has no perturbation covariate")
    if isinstance(perturbation, str) and perturbation != "all":
        return [perturbation]
    given = ["all"] if isinstance(perturbation, str) else [str(p) for p in perturbation]
    if "all" in given:
        if len(given) > 1:
            raise InputError("perturbation='all' stands alone; do not list others with it")
        names = [t for t in reg[reg.perturbation_key].tokens if t != reg.control]
        if not names:
            raise InputError("perturbation='all': the model knows no perturbation but the control")
        return names
    if not given:
        raise InputError("perturbation=[]: give at least one perturbation")
    if len(set(given)) < len(given):
        raise InputError(f"perturbation: a value is given twice: {given}")
    return given


def predict_one(model: RNADiffusion, source: ad.AnnData, changes: dict, **kw) -> ad.AnnData:
    """``source`` cells predicted under ``changes`` (see :meth:`RNADiffusion.predict`)."""
    engine, registry = model.engine, model.registry
    method, layer, seed = kw["method"], kw["layer"], kw["seed"]
    obs_src = source.obs[[k for k in registry.keys if k in source.obs]].copy()
    cond_src = engine.cond(obs_src)
    obs_tgt = obs_src.copy()
    for key, value in changes.items():
        if not registry[key].categorical:
            value = numeric_value(key, value)
        obs_tgt[f"rnadiff_source_{key}"] = obs_tgt[key]
        obs_tgt[key] = pd.Categorical([value] * len(obs_tgt)) if isinstance(value, str) else value
    soft = engine.soft_prior(obs_tgt, use=True) if kw["prior"] else None
    cond_tgt = engine.cond(obs_tgt, soft=soft)
    gen = torch.Generator().manual_seed(seed)
    sigma_max = float(kw["encode_sigma"] or model.config.diffusion.sigma_max)
    sigmas = engine.sigmas(kw["steps"], sigma_max=sigma_max)
    plan = engine.transfer_plan(obs_tgt, kw["transfer"], kw["transfer_scale"])  # checked first
    run = {"batch_size": kw["batch_size"], "progress": kw["progress"]}
    if method == "counterfactual":
        z0 = torch.from_numpy(model.model_space(source, layer))
        x = engine.encode(z0, sigmas, cond_src, obs=obs_src, **run)
    else:
        x = torch.randn(source.n_obs, engine.n_genes, generator=gen) * sigma_max
    z = engine.run(
        kw["sampler"],
        x,
        sigmas,
        cond_tgt,
        plan=plan,
        guidance=kw["guidance"],
        generator=gen,
        obs=obs_tgt,
        calibrated=kw["calibrated"],
        **run,
    )
    info = {"method": method, "sampler": kw["sampler"], "steps": kw["steps"], "seed": seed}
    info |= sampling_info(model, obs_tgt, plan, kw["guidance"], soft, kw["calibrated"])
    info |= {"encode_sigma": sigma_max, "spread_scale": 1.0, "layer": layer}
    info["target"] = {k: str(v) for k, v in changes.items()}
    x_log = engine.to_log(z)
    if kw["spread"] and method == "counterfactual" and model.spread_scale != 1:
        labels = conditions.condition_labels(registry, obs_tgt)
        x_log = widen(x_log, labels, model.spread_scale)  # each condition around its mean
        info["spread_scale"] = model.spread_scale
    others = other_genes(model, source, layer) if method == "counterfactual" else None
    return output(model, x_log, obs_tgt, info, others=others, names=source.obs_names)


def stack(predictions: list[ad.AnnData], names: list[str]) -> ad.AnnData:
    """One AnnData of the predictions under several perturbations: cell names get
    ``-<perturbation>``; ``uns['rnadiff']`` keeps what all share and, under ``predictions``,
    each perturbation's own record."""
    out = ad.concat(predictions, keys=names, index_unique="-", merge="same")
    infos = [dict(p.uns["rnadiff"]) for p in predictions]
    shared = {k: v for k, v in infos[0].items() if all(repr(i.get(k)) == repr(v) for i in infos)}
    out.uns["rnadiff"] = {**shared, "predictions": dict(zip(names, infos, strict=True))}
    out.uns["log1p"] = {"base": None}
    return out
