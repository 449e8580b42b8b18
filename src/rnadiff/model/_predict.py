"""Counterfactual prediction (``RNADiffusion.predict``): one target, or a stack of them."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anndata as ad
import pandas as pd
import torch
from tqdm.auto import tqdm

from rnadiff._errors import InputError
from rnadiff.conditioning import _conditions as conditions
from rnadiff.conditioning._anchors import anchor_cells
from rnadiff.conditioning._calibration import widen
from rnadiff.data._covariates import conditions_frame, numeric_value
from rnadiff.model import _counts, _generation, _unseen
from rnadiff.model._data import check_cells, other_genes
from rnadiff.model._output import output, sampling_info

if TYPE_CHECKING:
    from rnadiff.model._model import RNADiffusion

logger = logging.getLogger("rnadiff")


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


def warn_outside(engine, obs: pd.DataFrame) -> None:
    """Warn about continuous values (dose, time) outside the range measured in training for
    the cells' condition: the network extrapolates there."""
    for key, (n, lo, hi) in engine.outside_range(obs).items():
        logger.warning(
            "rnadiff: %d %s for %s outside the range measured for their condition "
            "(%g to %g): the network extrapolates there, check such predictions",
            n,
            "cell asks" if n == 1 else "cells ask",
            key,
            lo,
            hi,
        )


def warn_dose_zero(registry, obs_tgt: pd.DataFrame, changes: dict) -> None:
    """Warn when a dosed perturbation is asked for without a dose and the source cells'
    own dose is 0 (e.g. vehicle wells): at dose 0 a dosed perturbation is the control."""
    dkey, pkey = registry.dose_key, registry.perturbation_key
    if dkey is None or pkey not in changes or dkey in changes or dkey not in obs_tgt:
        return
    cov = registry[pkey]
    dosed = conditions.chemical_tokens(registry)
    asked = [p for p in cov.parts(str(changes[pkey])) if p in dosed]
    n_zero = int((pd.to_numeric(obs_tgt[dkey], errors="coerce") <= 0).sum())
    if asked and n_zero:
        logger.warning(
            "rnadiff: %d source cells keep their own %s of 0, and %s at %s 0 is the "
            "control: give the dose to predict at (target={%r: ...}; on the command line "
            "--set %s=...)",
            n_zero,
            dkey,
            "+".join(asked),
            dkey,
            dkey,
            dkey,
        )


def generate(model: RNADiffusion, conditions, n_cells, batch_size, progress, **kw) -> ad.AnnData:
    """See :meth:`RNADiffusion.generate` (the request checked here)."""
    frame = conditions_frame(conditions, model.registry)
    engine = model.engine.for_frame(frame)  # perturbations known by their features
    engine.check_sampling(kw["sampler"], kw["guidance"])
    if n_cells < 1:
        raise InputError(f"n_cells must be at least 1, got {n_cells}")
    soft = engine.soft_prior(frame, use=True) if kw.pop("prior") else None
    calibrated, seed, anchor = kw.pop("calibrated"), kw["seed"], kw.pop("anchor")
    warn_outside(engine, frame)
    depths = _counts.for_generate(model, frame, n_cells, kw)  # counts=True: library sizes
    run = dict(batch_size=batch_size, calibrated=calibrated)
    z, obs, plan = engine.sample(frame, n_cells, soft=soft, progress=progress, **run, **kw)
    x_log, n_anchored = engine.to_log(z), 0
    if anchor and _generation.applies(model):

        def decode_control():  # the same noise decoded under each cell's control
            frame_c = _generation.control_frame(model.registry, frame)
            z_c, obs_c, _ = engine.sample(frame_c, n_cells, progress=False, **run, **kw)
            return obs_c, engine.to_log(z_c)

        x_log, n_anchored = _generation.anchored(model, engine, obs, plan, x_log, decode_control)
    info = {"method": "generate", "sampler": kw["sampler"], "steps": kw["steps"]}
    info |= sampling_info(engine, obs, plan, kw["guidance"], soft, calibrated) | {"seed": seed}
    info["anchored_cells"] = n_anchored
    return _counts.with_counts(model, output(model, x_log, obs, info), depths, seed)


def predict(
    model: RNADiffusion, source, perturbation, target, batch_size, progress, **kw
) -> ad.AnnData:
    """See :meth:`RNADiffusion.predict` (the request checked here)."""
    check_cells(source, "source")
    names = targets(model, perturbation)
    for key in target or {}:
        model.registry[key]  # raises on unknown covariates
    if not target and names == [None]:
        raise InputError("give a perturbation or a target to predict")
    if kw["method"] not in ("counterfactual", "generate"):
        raise InputError(f"method must be 'counterfactual' or 'generate', got {kw['method']!r}")
    model.engine.check_sampling(kw["sampler"], kw["guidance"])
    if kw["counts"]:
        _counts.check_counts(model)
    encode_sigma = kw["encode_sigma"]
    if encode_sigma is not None and not 0 < float(encode_sigma) < float("inf"):
        raise InputError(f"encode_sigma must be a positive number, got {encode_sigma}")
    kw |= dict(batch_size=batch_size, progress=progress and len(names) == 1)
    pkey = model.registry.perturbation_key
    preds = [
        predict_one(model, source, {**(target or {}), pkey: p} if p else target, **kw)
        for p in tqdm(names, disable=not progress or len(names) == 1, desc="perturbations")
    ]
    return preds[0] if len(preds) == 1 else stack(preds, names)


def predict_one(model: RNADiffusion, source: ad.AnnData, changes: dict, **kw) -> ad.AnnData:
    """``source`` cells predicted under ``changes`` (see :meth:`RNADiffusion.predict`)."""
    registry = model.registry
    method, layer, seed = kw["method"], kw["layer"], kw["seed"]
    obs_src = source.obs[[k for k in registry.keys if k in source.obs]].copy()
    obs_tgt = obs_src.copy()
    for key, value in changes.items():
        if not registry[key].categorical:
            value = numeric_value(key, value)
        obs_tgt[f"rnadiff_source_{key}"] = obs_tgt[key]
        obs_tgt[key] = pd.Categorical([value] * len(obs_tgt)) if isinstance(value, str) else value
    warn_dose_zero(registry, obs_tgt, changes)
    # perturbations never seen but known by their features (drug structure, gene embedding)
    engine = model.engine.for_frame(pd.concat([obs_src, obs_tgt]))
    cond_src = engine.cond(obs_src)
    warn_outside(engine, obs_tgt)
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
        start, start_state = x.clone(), gen.get_state()  # for the control's decode (anchor)
    # counts=True: library sizes, and decoding stops at their counting noise level
    depths, decode = _counts.for_predict(model, engine, source, obs_src, obs_tgt, sigmas, kw)

    def decoded(x0, cond, plan_, obs, generator, progress):
        return engine.run(
            kw["sampler"], x0, decode, cond, plan=plan_, guidance=kw["guidance"],
            generator=generator, obs=obs, calibrated=kw["calibrated"],
            batch_size=kw["batch_size"], progress=progress,
        )  # fmt: skip

    z = decoded(x, cond_tgt, plan, obs_tgt, gen, run["progress"])
    info = {"method": method, "sampler": kw["sampler"], "steps": kw["steps"], "seed": seed}
    info |= sampling_info(engine, obs_tgt, plan, kw["guidance"], soft, kw["calibrated"])
    info |= {"encode_sigma": sigma_max, "spread_scale": 1.0, "layer": layer}
    info["target"] = {k: str(v) for k, v in changes.items()}
    x_log = engine.to_log(z)
    if method == "counterfactual":
        x_log, info["anchored_cells"] = anchored(model, engine, obs_src, obs_tgt, plan, x_log, kw)
        x_log, info["unseen_drug_means"] = _unseen.moved(
            model, engine, obs_src, obs_tgt, engine.to_log(z0.numpy()), x_log, kw["anchor"]
        )
    elif kw["anchor"] and _generation.applies(model):  # as generate() moves its cells

        def decode_control():  # the same noise decoded under each cell's control
            obs_c = _generation.control_frame(registry, obs_tgt)
            gen_c = torch.Generator()
            gen_c.set_state(start_state)
            plan_c = engine.transfer_plan(obs_c, kw["transfer"], kw["transfer_scale"])
            z_c = decoded(start, engine.cond(obs_c), plan_c, obs_c, gen_c, False)
            return obs_c, engine.to_log(z_c)

        x_log, info["anchored_cells"] = _generation.anchored(
            model, engine, obs_tgt, plan, x_log, decode_control
        )
    if kw["spread"] and method == "counterfactual" and model.spread_scale != 1:
        labels = conditions.condition_labels(registry, obs_tgt)
        x_log = widen(x_log, labels, model.spread_scale)  # each condition around its mean
        info["spread_scale"] = model.spread_scale
    others = other_genes(model, source, layer) if method == "counterfactual" else None
    out = output(model, x_log, obs_tgt, info, others=others, names=source.obs_names)
    return _counts.with_counts(model, out, depths, seed)


def mean_shifts(model, engine, obs_src, obs_tgt, plan) -> tuple:
    """The mean anchors' ``(shift, reference, where)`` of cells moved from ``obs_src`` to
    ``obs_tgt`` (:meth:`rnadiff.conditioning._anchors.Anchors.shifts`), with a combination's
    interaction taken from the contexts where it was measured when ``plan`` composes it."""
    extra = {}
    if plan.mode == "compose" and plan.mask.any():  # interactions taken from elsewhere
        interaction = engine.interaction_cells(obs_tgt, plan.mask)
        found = engine.context_plan(plan.mask, conditions.condition_rows(model.registry, obs_tgt))
        if interaction.any() and found is not None:
            extra = dict(interaction=interaction, contexts=found[0], context_weights=found[1])
    return model.anchors.shifts(model.registry, obs_src, obs_tgt, **extra)


def anchored(model, engine, obs_src, obs_tgt, plan, x_log, kw) -> tuple:
    """``x_log`` with the mean anchors of :meth:`RNADiffusion.calibrate_means` added
    (values kept non-negative), and the number of cells anchored."""
    if not kw["anchor"] or model.anchors is None:
        return x_log, 0
    shift, reference, where = mean_shifts(model, engine, obs_src, obs_tgt, plan)
    if not where.any():
        return x_log, 0
    logger.info(
        "rnadiff: %d of %d cells anchored on the training means of the measured conditions "
        "their target is built from (anchor=False: the network's own means)",
        int(where.sum()),
        len(where),
    )
    return anchor_cells(x_log, shift, reference, where), int(where.sum())


def anchoring(model: RNADiffusion, engine):
    """``rank_perturbations``' correction of generated cells (``(obs_src, obs, x_src, x) ->
    x``), as ``predict`` corrects counterfactuals: the mean anchors of measured conditions,
    then drugs never measured moved to the measured drugs' changes; None without anchors."""
    if model.anchors is None:
        return None

    def adjust(obs_src, obs, x_src, x_log):
        plan = engine.transfer_plan(obs, "compose")
        x_log, _ = anchored(model, engine, obs_src, obs, plan, x_log, {"anchor": True})
        x_log, _ = _unseen.moved(model, engine, obs_src, obs, x_src, x_log, True)
        return x_log

    return adjust


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
