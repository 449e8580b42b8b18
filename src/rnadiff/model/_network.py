"""The model's network and sampling engine, built from its configuration and covariates:
the perturbation encoder gets the features of its tokens (drug fingerprints, user gene
embeddings) and, with a dose, its Hill dose-response."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from rnadiff._errors import InputError
from rnadiff.conditioning._features import GeneTable, TokenFeatures, perturbation_spec
from rnadiff.data._covariates import CovariateRegistry
from rnadiff.networks import Denoiser
from rnadiff.sampling import SamplingEngine
from rnadiff.training import make_ema

if TYPE_CHECKING:
    from rnadiff.model._model import RNADiffusion


def gene_table(
    registry: CovariateRegistry, frame: pd.DataFrame | None, var_names
) -> tuple[CovariateRegistry, GeneTable | None]:
    """The user's gene embeddings kept for the data's genes and the perturbation's tokens
    (knock-out targets), and the registry that records their width."""
    if frame is None:
        return registry, None
    pkey = registry.perturbation_key
    if pkey is None:
        raise InputError(
            "gene_embeddings describe perturbation targets; register a perturbation_key"
        )
    tokens = registry[pkey].tokens
    table = GeneTable.from_frame(frame, keep=[*map(str, var_names), *tokens])
    if not set(tokens) & set(table.genes):
        raise InputError(
            "gene_embeddings has none of the perturbations as a gene (e.g. "
            f"{list(tokens)[:5]}); its index must be gene names as in the perturbation column"
        )
    return registry.replace(pkey, gene_embedding_dim=table.width), table


def token_features(model: RNADiffusion, genes: GeneTable | None) -> TokenFeatures:
    """What describes any perturbation name for this model (structures, gene embeddings)."""
    pkey = model.registry.perturbation_key
    molecules = dict(model.registry[pkey].molecules) if pkey is not None else {}
    cfg = model.config.conditioning
    return TokenFeatures(molecules, genes, radius=cfg.fingerprint_radius, bits=cfg.fingerprint_bits)


def build(model: RNADiffusion, genes: GeneTable | None) -> None:
    """Set ``model.denoiser``, ``model.ema`` and ``model.engine`` (a new network; features of
    the training tokens filled in)."""
    registry, config = model.registry, model.config
    features = token_features(model, genes)
    cond = config.conditioning
    spec = perturbation_spec(registry, features, cond.dose_response, cond.dose_unknown)
    model.denoiser = Denoiser(
        len(model.preprocess.genes),
        categorical={c.key: len(c.tokens) for c in registry.covariates if c.categorical},
        continuous=[c.key for c in registry.covariates if not c.categorical],
        config=config.network,
        sigma_data=config.diffusion.sigma_data,
        perturbation=spec,
    )
    if spec is not None:
        cov = registry[spec.key]
        encoder = model.denoiser.cond_encoder.encoders[spec.key]
        feats, has = features.tensors(cov.tokens)
        for kind in spec.feature_dims:
            encoder.set_features(kind, feats[kind], has[kind])
        if spec.dose is not None:
            encoder.dosed.copy_(encoder.dosed.new_tensor([t in cov.dosed for t in cov.tokens]))
    model.ema = make_ema(model.denoiser)
    model.engine = SamplingEngine(
        model.ema, registry, model.preprocess, config.diffusion, features=features
    )
