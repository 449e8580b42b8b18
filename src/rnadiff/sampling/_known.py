"""Perturbations known by their features: views of a sampling engine that also embed drugs
given by SMILES and unseen tokens described by features (drug structures, gene embeddings).

A view shares the network's parameters; nothing of the engine it comes from changes.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import pandas as pd
import torch

from rnadiff._errors import InputError

if TYPE_CHECKING:
    from rnadiff.sampling._engine import SamplingEngine

logger = logging.getLogger("rnadiff")


def with_molecules(engine: SamplingEngine, table: Mapping[str, str]) -> SamplingEngine:
    """A view of ``engine`` whose drug table also holds ``table`` (``{name: SMILES}``,
    checked); the names are embedded from their structure when asked for."""
    from rnadiff.data._molecules import check_table

    table = check_table(table, what="candidates")
    if not table:
        return engine
    spec = perturbation_encoder(engine)
    if spec is None or "molecule" not in spec.kinds or engine.features is None:
        raise InputError(
            "this model does not embed drugs by structure: train it with SMILES "
            "(setup_anndata(smiles_key=... or smiles=...)) to predict or rank new drugs"
        )
    molecules = {**engine.features.molecules, **table}
    features = dataclasses.replace(engine.features, molecules=molecules)
    return dataclasses.replace(engine, features=features, _last_encoding=None)


def perturbation_encoder(engine: SamplingEngine):
    """The engine's perturbation embedding when it embeds tokens by their features."""
    pkey = engine.registry.perturbation_key
    if pkey is None:
        return None
    encoder = engine.denoiser.cond_encoder.encoders[pkey]
    return encoder if hasattr(encoder, "extended") else None


def with_known(engine: SamplingEngine, values: Iterable) -> SamplingEngine:
    """``engine``, or a view of it that also knows the perturbations among ``values``
    (values of the perturbation column; combinations split) that were never seen in
    training but have features: drugs by their structure, genes by their embedding. The
    view shares the network's parameters; nothing of ``engine`` changes."""
    pkey = engine.registry.perturbation_key
    encoder = perturbation_encoder(engine)
    if encoder is None or engine.features is None:
        return engine
    cov = engine.registry[pkey]
    parts = {p for v in values if pd.notna(v) for p in cov.parts(v)}
    new = sorted(p for p in parts - set(cov.tokens) if engine.features.knows(p))
    if not new:
        return engine
    features, has = engine.features.tensors(new)
    dosed = [encoder.dose is not None and engine.features.is_molecule(p) for p in new]
    logger.info(
        "rnadiff: never seen in training, embedded from %s: %s",
        "their features",
        ", ".join(new[:10]) + (f" and {len(new) - 10} more" if len(new) > 10 else ""),
    )
    registry = engine.registry.with_tokens(
        pkey, new, dosed=[p for p, d in zip(new, dosed, strict=True) if d]
    )
    denoiser = engine.denoiser.with_extra_tokens(pkey, features, has, torch.tensor(dosed))
    return dataclasses.replace(
        engine,
        registry=registry,
        denoiser=denoiser,
        base_tokens=engine.trained_tokens,
        _last_encoding=None,
    )
