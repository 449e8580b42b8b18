"""Calibration on the training cells after training: effect sizes, counterfactual spread, and
the expression prior of unseen perturbations. Each function takes the trained model."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from rnadiff.conditioning import _conditions as conditions
from rnadiff.conditioning._anchors import (
    Anchors,
    anchor_targets,
    continuous_values,
    pooled_shrink,
    shrink,
    transport_targets,
)
from rnadiff.conditioning._calibration import SPREAD_RANGE, effect_scales, spread_ratio
from rnadiff.conditioning._prior import TRUST_GRID, fit_structure_trust, fit_trust, gene_vectors
from rnadiff.data._molecules import tanimoto_matrix
from rnadiff.model._passthrough import Passthrough
from rnadiff.sampling._transfer_plan import TransferPlan

if TYPE_CHECKING:
    from rnadiff.model._model import RNADiffusion

logger = logging.getLogger("rnadiff")
EFFECT_COLUMNS = ["scale", "n_cells", "predicted_effect", "observed_effect"]
SPREAD_COLUMNS = ["source", "target", "n_source", "n_target", "ratio"]


def calibrate_effects(
    model: RNADiffusion, *, n_cells: int, steps: int, seed: int, batch_size: int, progress: bool
) -> pd.DataFrame:
    """See :meth:`rnadiff.RNADiffusion.calibrate_effects`."""
    engine, registry, adata = model.engine, model.registry, model.adata
    engine.effect_scales = {}
    pkey, control = registry.perturbation_key, registry.control
    empty = pd.DataFrame(columns=EFFECT_COLUMNS).rename_axis("perturbation")
    if pkey is None or control is None:
        return empty
    obs = adata.obs[[k for k in registry.keys if k in adata.obs]]
    labels = conditions.context_and_perturbation(registry, obs)
    codes, groups = pd.factorize(pd.Series(labels, dtype=object))
    members = {g: np.flatnonzero(codes == i) for i, g in enumerate(groups)}
    means = dict(zip(groups, group_means(model, adata, codes, len(groups)), strict=True))
    ok = [None not in ctx and p == control for ctx, p in labels]
    pool = np.flatnonzero(ok)
    perts = sorted({p for ctx, p in means if p not in (None, control) and (ctx, control) in means})
    if not len(pool) or not perts:
        return empty
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(pool, size=min(n_cells, len(pool)), replace=False))
    obs_src = obs.iloc[idx]
    ctx_src = [labels[i][0] for i in idx]
    sigmas = engine.sigmas(steps)
    z0 = torch.from_numpy(model.model_space(adata[idx]))
    x = engine.encode(z0, sigmas, engine.cond(obs_src), batch_size=batch_size, obs=obs_src)
    gen = torch.Generator().manual_seed(seed)
    # continuous covariates (dose, time) of the decoded cells: those of a random cell of
    # the perturbation in the same context, so the prediction matches what was measured
    continuous = [c.key for c in registry.covariates if not c.categorical]

    def decode(pairs: list[tuple[int, str]]) -> np.ndarray:
        """Decode cell ``i`` of the sample under perturbation ``p`` for each pair (under
        the control: the cell's own continuous covariates)."""
        rows = np.array([i for i, _ in pairs])
        target = obs_src.iloc[rows].copy()
        target[pkey] = pd.Categorical([p for _, p in pairs])
        if continuous:
            donors = [
                idx[i] if p == control else rng.choice(members[(ctx_src[i], p)]) for i, p in pairs
            ]
            for key in continuous:
                target[key] = obs[key].to_numpy()[donors]
        z = engine.run(
            "dpmpp_2m",
            x[torch.from_numpy(rows)],
            sigmas,
            engine.cond(target),
            plan=TransferPlan(np.zeros(len(target), dtype=bool), "none", None),
            generator=gen,
            batch_size=batch_size,
            obs=target,
            calibrated=False,
        )
        return engine.to_log(z)

    recon = decode([(i, control) for i in range(len(idx))])
    cells = {p: [i for i, c in enumerate(ctx_src) if (c, p) in means] for p in perts}
    perts = [p for p in perts if cells[p]]
    chunk = max(1, 8192 // len(idx))  # perturbations decoded together
    predicted, observed = {}, {}
    for start in tqdm(
        range(0, len(perts), chunk), disable=not progress, desc="calibrating", leave=False
    ):
        part = perts[start : start + chunk]
        out = decode([(i, p) for p in part for i in cells[p]])
        at = 0
        for p in part:
            rows = np.array(cells[p])
            predicted[p] = (out[at : at + len(rows)] - recon[rows]).mean(0)
            at += len(rows)
            observed[p] = np.mean(
                [means[(ctx_src[i], p)] - means[(ctx_src[i], control)] for i in rows], axis=0
            )
    engine.effect_scales = effect_scales(predicted, observed)
    table = pd.DataFrame(
        {
            "scale": engine.effect_scales,
            "n_cells": {p: len(cells[p]) for p in perts},
            "predicted_effect": {k: float(np.linalg.norm(v)) for k, v in predicted.items()},
            "observed_effect": {k: float(np.linalg.norm(v)) for k, v in observed.items()},
        },
        columns=EFFECT_COLUMNS,
    ).rename_axis("perturbation")
    if len(table):
        logger.info(
            "rnadiff: effect calibration on %d control cells: scale median %.2f (%.2f-%.2f)",
            len(idx),
            table.scale.median(),
            table.scale.min(),
            table.scale.max(),
        )
    return table


def calibrate_spread(
    model: RNADiffusion,
    *,
    n_cells: int,
    max_pairs: int,
    min_cells: int,
    steps: int,
    seed: int,
    batch_size: int,
    progress: bool,
) -> pd.DataFrame:
    """See :meth:`rnadiff.RNADiffusion.calibrate_spread`."""
    adata, registry = model.adata, model.registry
    model.spread_scale = 1.0
    pairs = conditions.spread_pairs(registry, adata.obs, min_cells)[:max_pairs]
    if not pairs:
        logger.info("rnadiff: no pair of measured conditions to calibrate the spread on")
        return pd.DataFrame(columns=SPREAD_COLUMNS)
    rng = np.random.default_rng(seed)
    drawn: dict[bytes, np.ndarray] = {}  # one sample per source group: encoded once
    rows = []
    for source, changes, target in tqdm(
        pairs, disable=not progress, desc="calibrating spread", leave=False
    ):
        key = source.tobytes()
        if key not in drawn:
            drawn[key] = np.sort(rng.choice(source, min(n_cells, len(source)), replace=False))
        idx = drawn[key]
        moved = model.predict(
            adata[idx],
            target=changes,
            steps=steps,
            seed=seed,
            batch_size=batch_size,
            spread=False,
            anchor=False,  # the decoded spread, whatever the means
            progress=False,
        )[:, model.genes].X
        first_source, first_target = adata.obs.iloc[source[0]], adata.obs.iloc[target[0]]
        rows.append(
            {
                "source": conditions.describe(registry, first_source, changes, own=True),
                "target": conditions.describe(registry, first_target, changes),
                "n_source": len(idx),
                "n_target": len(target),
                "ratio": spread_ratio(moved, _real_cells(model, adata, target, seed)),
            }
        )
    table = pd.DataFrame(rows, columns=SPREAD_COLUMNS)
    finite = table.ratio[np.isfinite(table.ratio)].to_numpy()
    if len(finite):
        model.spread_scale = float(np.clip(finite.mean(), *SPREAD_RANGE))
    summary = (finite.mean(), finite.min(), finite.max()) if len(finite) else (np.nan,) * 3
    logger.info(
        "rnadiff: spread calibration on %d pairs of conditions: ratio %.3f (%.3f-%.3f), "
        "counterfactual cells widened by %.3f",
        len(table),
        *summary,
        model.spread_scale,
    )
    return table


MAX_REAL = 4096  # real target cells per pair the spread is measured on (a seeded sample)


def _real_cells(model: RNADiffusion, adata, rows: np.ndarray, seed: int) -> np.ndarray:
    """Log expression of (at most :data:`MAX_REAL` of) the training cells ``rows``."""
    if len(rows) > MAX_REAL:
        rows = np.sort(np.random.default_rng(seed).choice(rows, MAX_REAL, replace=False))
    return model.log_expression(adata[rows])


def group_means(model: RNADiffusion, adata, codes, n_groups: int, chunk: int = 8192):
    """Mean log expression of each group of training cells (``codes``), read a chunk of cells
    at a time: ``(n_groups, n_genes)``."""
    return group_moments(model, adata, codes, n_groups, chunk)[0]


def group_moments(
    model: RNADiffusion, adata, codes, n_groups: int, chunk: int = 8192, *, also=None
):
    """:func:`group_means`, and the pooled within-group variance of each gene. ``also``:
    ``(codes, n_groups)`` of a second grouping whose means come from the same pass over the
    cells (returned third)."""
    n = len(codes)

    def members(c, k):
        return sp.csr_matrix((np.ones(n), (c, np.arange(n))), shape=(k, n))

    groupings = [(np.asarray(codes), n_groups)] + ([also] if also is not None else [])
    member = sp.vstack([members(c, k) for c, k in groupings]).tocsr()
    counts = np.concatenate([np.bincount(c, minlength=k) for c, k in groupings])
    sums = np.zeros((member.shape[0], len(model.genes)))
    squares = np.zeros(len(model.genes))
    for start in range(0, adata.n_obs, chunk):  # dense log expression, a chunk at a time
        rows = slice(start, start + chunk)
        x = model.log_expression(adata[rows]).astype(np.float64)
        sums += member[:, rows] @ x
        squares += (x * x).sum(0)
    all_means = sums / np.maximum(counts, 1)[:, None]
    means, mine = all_means[:n_groups], counts[:n_groups]
    between = (mine[:, None] * means * means).sum(0)
    dof = max(n - int((mine > 0).sum()), 1)
    within = np.maximum(squares - between, 0) / dof
    return (means, within) if also is None else (means, within, all_means[n_groups:])


def group_codes(groups: list[np.ndarray], n: int) -> np.ndarray:
    """Each of ``n`` rows' group among the disjoint row sets ``groups``; ``len(groups)``: none."""
    codes = np.full(n, len(groups), dtype=np.int64)
    for i, rows in enumerate(groups):
        codes[rows] = i
    return codes


def fit_gene_vectors(model: RNADiffusion, adata, seed: int, max_cells: int = 5000) -> np.ndarray:
    """The genes' loadings on the principal axes of (at most ``max_cells``) training cells."""
    if adata.n_obs > max_cells:  # the same cells as subsampling after the transform
        rng = np.random.default_rng(seed)
        adata = adata[np.sort(rng.choice(adata.n_obs, max_cells, replace=False))]
    return gene_vectors(model.model_space(adata))


def fit_prior(model: RNADiffusion, adata, chunk: int = 8192) -> dict | None:
    """Fit the expression prior's trust in co-expression on the seen perturbations.

    Each single perturbation's measured effect (log expression, mean change from the
    control in each context where both were measured, averaged over those contexts by its
    cells) and its number of cells; :func:`rnadiff.conditioning.fit_trust` then leaves each
    one out in turn. ``None`` without a perturbation column.
    """
    registry = model.registry
    pkey, control = registry.perturbation_key, registry.control
    if pkey is None or control is None or pkey not in adata.obs:
        return None
    cov = registry[pkey]
    labels = conditions.context_and_perturbation(registry, adata.obs)
    codes, groups = pd.factorize(pd.Series(labels, dtype=object))
    counts = np.bincount(codes, minlength=len(groups))
    means = dict(zip(groups, group_means(model, adata, codes, len(groups), chunk), strict=True))
    n = dict(zip(groups, counts, strict=True))
    effects, shares = {}, {}
    for (ctx, p), m in means.items():
        single = p not in (None, control) and len(cov.parts(p)) == 1
        if not single or None in ctx or (ctx, control) not in means:
            continue
        effects[p] = effects.get(p, 0) + n[(ctx, p)] * (m - means[(ctx, control)])
        shares[p] = shares.get(p, 0) + int(n[(ctx, p)])
    effects = {p: v / shares[p] for p, v in effects.items()}
    trust, errors = (None, np.zeros(0))
    if model.gene_vectors is not None and len(effects) > 1:
        trust, errors = fit_trust(effects, shares, model.genes, model.gene_vectors)
    if trust is not None:
        logger.info(
            "rnadiff: expression prior: trust in co-expression %.1f (leave-one-out error "
            "%.4g at trust 0, %.4g at 1)",
            trust,
            errors[0],
            errors[-1],
        )
    structure, structure_errors = fit_structure(model, effects, shares)
    return {
        "trust": trust,
        "shares": shares,
        "grid": list(TRUST_GRID) if trust is not None or structure is not None else [],
        "loo_error": [float(e) for e in errors],
        "structure_trust": structure,
        "structure_loo_error": [float(e) for e in structure_errors],
    }


def fit_structure(model: RNADiffusion, effects: dict, shares: dict) -> tuple:
    """The trust in structure of :func:`rnadiff.conditioning._prior.fit_structure_trust` on
    the seen drugs' measured effects (Tanimoto similarity of the model's fingerprints);
    ``(None, [])`` without drugs by structure."""
    features = model.engine.features
    drugs = [p for p in effects if features is not None and features.is_molecule(p)]
    if len(drugs) < 2:
        return None, np.zeros(0)
    similarity = tanimoto_matrix(features.tensors(drugs)[0]["molecule"].numpy(), None)
    row = {d: i for i, d in enumerate(drugs)}
    chemical = conditions.chemical_tokens(model.registry)  # the drugs' average (no knock-outs)
    trust, errors = fit_structure_trust(
        {p: e for p, e in effects.items() if p in chemical},
        {p: n for p, n in shares.items() if p in chemical},
        drugs,
        lambda a, b: similarity[row[a], row[b]],
    )
    if trust is not None:
        logger.info(
            "rnadiff: unseen drugs: trust in structure %.1f, fitted on %d seen drugs left out "
            "in turn (error %.4g at trust 0 = the average drug, %.4g at 1 = the most "
            "similar structures)",
            trust,
            len(drugs),
            errors[0],
            errors[-1],
        )
    return trust, errors


def fit_passthrough(model: RNADiffusion, adata, chunk: int = 8192) -> Passthrough | None:
    """Training means of the genes the model leaves out, per condition (``None``: it models
    every gene of the data)."""
    modelled = set(model.genes)
    others = [g for g in model.preprocess.all_genes if g not in modelled]
    if not others:
        return None

    def chunks():
        for start in range(0, adata.n_obs, chunk):
            rows = slice(start, min(start + chunk, adata.n_obs))
            yield rows, model.log_expression(adata[rows], genes=others)

    return Passthrough.fit(model.registry, adata.obs, chunks(), others)


def fit_statistics(model: RNADiffusion, adata, seed: int) -> None:
    """What the model keeps of its training cells: the conditions and continuous values
    measured, the data's fingerprint, the expression prior and the unmodelled genes' means."""
    from rnadiff.model._data import fingerprint
    from rnadiff.training._distributed import shared

    model.seen = conditions.condition_keys(model.registry, adata.obs)
    model.measured = conditions.measured_values(model.registry, adata.obs)
    model.engine.measured_within = conditions.measured_within(model.registry, adata.obs)
    model.adata = adata

    def compute():  # once (rank 0 under torchrun), for every process
        model.gene_vectors = fit_gene_vectors(model, adata, seed)
        return (
            fingerprint(adata, model.setup),
            model.gene_vectors,
            fit_prior(model, adata),
            fit_passthrough(model, adata),
        )

    model.fingerprint, model.gene_vectors, model.prior, model.passthrough = shared(compute)


MEAN_COLUMNS = ["condition", "n_cells", "n_predicted", "residual", "noise"]
MAX_DECODED = 8192  # cells decoded in one run while anchoring (conditions x cells)
# principal axes on which a time course's residuals are kept whole (pooled_shrink): 10 and 30
# were better than per-gene shrinkage alone on simulated time courses and the HSMM inner split
# (benchmarks/results/studies/anchor/README.md), 30 a little more
AXES = 30


def calibrate_means(
    model: RNADiffusion,
    *,
    n_cells: int,
    max_conditions: int,
    steps: int,
    seed: int,
    batch_size: int,
    progress: bool,
) -> pd.DataFrame:
    """See :meth:`rnadiff.RNADiffusion.calibrate_means`."""
    adata, registry = model.adata, model.registry
    model.anchors = None
    transports = registry.perturbation_key is None or registry.control is None
    found = (transport_targets if transports else anchor_targets)(registry, adata.obs)
    if not found:
        logger.info("rnadiff: no measured condition with a source of cells to anchor means on")
        return pd.DataFrame(columns=MEAN_COLUMNS)
    if len(found) > max_conditions:
        logger.info(
            "rnadiff: mean anchors on %d of %d %s",
            max_conditions,
            len(found),
            "transports, each source's nearest first"
            if transports
            else "measured conditions, those with the most cells",
        )
        found = found[:max_conditions]
    # groups: each condition's training cells, then each source's (a context's control
    # cells; in a time course, a measured condition)
    sources = {s.tobytes(): s for s, _, _ in found}
    position = {key: i for i, key in enumerate(sources)}  # each source's means
    targets = {t.tobytes(): t for _, _, t in found}
    at = {key: i for i, key in enumerate(targets)}  # each target's means
    n_obs = adata.n_obs
    codes = group_codes(list(targets.values()), n_obs)  # + the rest
    controls = (group_codes(list(sources.values()), n_obs), len(sources) + 1)
    means, within, ctrl_means = group_moments(model, adata, codes, len(targets) + 1, also=controls)
    rng = np.random.default_rng(seed)
    axes = principal_axes(model, adata, rng) if transports else None
    by_source: dict[bytes, list[int]] = {}
    for i, (source, _, _) in enumerate(found):
        by_source.setdefault(source.tobytes(), []).append(i)
    rows: list = [None] * len(found)
    levels = [means[at[t.tobytes()]].astype(np.float32) for _, _, t in found]
    residuals: list = [None] * len(found)
    predicted: list = [None] * len(found)
    bar = tqdm(total=len(found), disable=not progress, desc="anchoring means", leave=False)
    for key, members in by_source.items():
        source = sources[key]
        idx = np.sort(rng.choice(source, min(n_cells, len(source)), replace=False))
        cells = adata[idx]
        own = model.log_expression(cells).astype(np.float64)
        chunk = max(1, MAX_DECODED // len(idx))  # conditions decoded together
        for start in range(0, len(members), chunk):
            part = members[start : start + chunk]
            preds = counterfactuals(
                model, cells, [found[i][1] for i in part], steps=steps, seed=seed,
                batch_size=batch_size,
            )  # fmt: skip
            for i, pred in zip(part, preds, strict=True):
                target = found[i][2]
                predicted[i] = pred.mean(0).astype(np.float32)
                change = pred - own  # each cell's predicted change from its own values
                r = means[at[target.tobytes()]] - ctrl_means[position[key]] - change.mean(0)
                noise = residual_noise(within, len(target), len(source), pred, own)
                kept = shrink(r, noise) if axes is None else pooled_shrink(r, noise, axes)
                residuals[i] = kept.astype(np.float32)
                name = conditions.describe(registry, adata.obs.iloc[target[0]], {}, True)
                if transports:  # a time course: from which measured condition
                    origin = conditions.describe(registry, adata.obs.iloc[source[0]], {}, True)
                    name = f"{origin} -> {name}"
                rows[i] = {
                    "condition": name,
                    "n_cells": len(target),
                    "n_predicted": len(idx),
                    "residual": float(np.linalg.norm(r)),
                    "noise": float(np.sqrt(noise.sum())),
                }
            bar.update(len(part))
    bar.close()
    obs = adata.obs.iloc[[t[0] for _, _, t in found]]
    conts = [c for c in registry.covariates if not c.categorical and c.key in obs]
    values = continuous_values(obs, [c.key for c in conts])
    origin = continuous_values(adata.obs.iloc[[s[0] for s, _, _ in found]], [c.key for c in conts])
    model.anchors = Anchors(
        tuple(conditions.condition_rows(registry, obs)),
        tuple(c.key for c in conts),
        tuple(bool(c.log) for c in conts),
        values,
        np.stack(residuals),
        np.stack(predicted),
        np.array([len(t) for _, _, t in found]),
        origin if transports else None,  # a time course's sources; else the controls
        np.stack(levels),
    )
    table = pd.DataFrame(rows, columns=MEAN_COLUMNS)
    logger.info(
        "rnadiff: mean anchors on %d %s: residual norm median %.3f (%d above their sampling "
        "noise, median noise %.3f)",
        len(table),
        "transports between measured conditions" if transports else "measured conditions",
        table.residual.median(),
        int((table.residual > table.noise).sum()),
        table.noise.median(),
    )
    return table


def principal_axes(model: RNADiffusion, adata, rng, k: int = AXES, max_cells: int = 2000):
    """The top ``k`` principal axes (``(n_genes, k)``, orthonormal) of the log expression of
    at most ``max_cells`` training cells (a seeded subsample: bounded memory at any size)."""
    idx = np.arange(adata.n_obs)
    if adata.n_obs > max_cells:
        idx = np.sort(rng.choice(adata.n_obs, max_cells, replace=False))
    x = model.log_expression(adata[idx]).astype(np.float64)
    x -= x.mean(0)
    k = max(1, min(k, x.shape[0] - 1, x.shape[1]))  # centred: rank below the cells
    return np.linalg.svd(x, full_matrices=False)[2][:k].T


def residual_noise(
    within: np.ndarray, n_target: int, n_source: int, pred: np.ndarray, own: np.ndarray
) -> np.ndarray:
    """Each gene's variance of an anchor's residual from sampling noise alone: the two training
    means' (``within`` the pooled within-condition variance; as if independent, also for a
    condition's own) and the mean predicted change's over the ``len(own)`` cells drawn."""
    noise = within * (1 / n_target + 1 / n_source)
    m = len(own)
    return noise + ((pred - own).var(0, ddof=1) / m if m > 1 else 0.0)


def counterfactuals(
    model: RNADiffusion, cells, targets: list[dict], *, steps: int, seed: int, batch_size: int
) -> np.ndarray:
    """What ``predict(cells, target=t, spread=False, anchor=False)`` gives (log expression of
    the modelled genes) for each ``t`` of ``targets``, the cells encoded once and decoded
    under every target in one run: ``(len(targets), n_cells, n_genes)``."""
    registry, n = model.registry, cells.n_obs
    obs_src = cells.obs[[k for k in registry.keys if k in cells.obs]].copy()
    obs_tgt = pd.concat([obs_src] * len(targets), ignore_index=True)
    for key in {k for t in targets for k in t}:
        values = np.repeat(
            [t.get(key, np.nan) for t in targets], n
        )  # every target names the same covariates (anchor_targets)
        if registry[key].categorical:
            obs_tgt[key] = pd.Categorical(values.astype(object))
        else:
            obs_tgt[key] = values.astype(np.float64)
    engine = model.engine.for_frame(pd.concat([obs_src, obs_tgt], ignore_index=True))
    sigmas = engine.sigmas(steps, sigma_max=float(model.config.diffusion.sigma_max))
    z0 = torch.from_numpy(model.model_space(cells))
    x = engine.encode(z0, sigmas, engine.cond(obs_src), obs=obs_src, batch_size=batch_size)
    z = engine.run(
        "dpmpp_2m",
        x.repeat(len(targets), 1),
        sigmas,
        engine.cond(obs_tgt),
        plan=engine.transfer_plan(obs_tgt, "compose"),
        generator=torch.Generator().manual_seed(seed),
        obs=obs_tgt,
        batch_size=batch_size,
    )
    return engine.to_log(z).astype(np.float64).reshape(len(targets), n, -1)
