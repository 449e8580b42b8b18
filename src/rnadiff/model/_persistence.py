"""Saving and loading a model: a folder of safetensors and JSON with a manifest of SHA-256
hashes (no pickle). Anything missing, corrupt or of another shape is one clear error naming
the file (:func:`rnadiff.training.load_checkpoint` checks the hashes)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from rnadiff._config import ModelConfig, TrainConfig
from rnadiff._errors import InputError
from rnadiff._version import __version__
from rnadiff.conditioning._anchors import Anchors
from rnadiff.conditioning._features import GeneTable
from rnadiff.data._covariates import CovariateRegistry
from rnadiff.data._preprocessing import PreprocessState
from rnadiff.data._validation import check_genes
from rnadiff.model import _counts
from rnadiff.model._data import check_same_data, fingerprint
from rnadiff.model._passthrough import Passthrough
from rnadiff.training import load_checkpoint, save_checkpoint
from rnadiff.training._checkpoint import META
from rnadiff.training._distributed import is_main

if TYPE_CHECKING:
    import anndata as ad

    from rnadiff.model._model import RNADiffusion


def save(model: RNADiffusion, path: str | os.PathLike) -> None:
    """See :meth:`rnadiff.RNADiffusion.save`. Under torchrun only rank 0 writes."""
    if not is_main():
        return
    meta = {
        "rnadiff_version": __version__,
        "model_config": model.config.to_dict(),
        "train_config": model.train_config.to_dict() if model.train_config else None,
        "setup": model.setup,
        "registry": model.registry.to_dict(),
        "preprocess": model.preprocess.to_json(),
        "step": model.step,
        "history": model.history,
        "seen_conditions": sorted(list(row) for row in model.seen),
        "measured_values": model.measured,
        "measured_within": model.engine.measured_within,
        "effect_scales": model.effect_scales,
        "spread_scale": model.spread_scale,
        "anchors": None if model.anchors is None else model.anchors.to_json(),
        "prior": model.prior,
        "fingerprint": model.fingerprint,
        "passthrough": None if model.passthrough is None else model.passthrough.to_json(),
        "library_sizes": None if (libs := _counts.fitted(model)) is None else libs.to_json(),
        "distributed": {  # how the run was trained: processes, and the global batch
            "world_size": getattr(model, "world_size", 1),
            "global_batch": model.train_config.batch_size if model.train_config else None,
        },
    }
    weights = {f"model.{k}": v for k, v in model.denoiser.state_dict().items()}
    weights |= {f"ema.{k}": v for k, v in model.ema.state_dict().items()}
    state = model.preprocess
    weights["preprocess.mean"] = torch.from_numpy(state.mean)
    weights["preprocess.std"] = torch.from_numpy(state.std)
    if state.expr_mean is not None:
        weights["preprocess.expr_mean"] = torch.from_numpy(state.expr_mean)
    if model.gene_vectors is not None:
        weights["prior.gene_vectors"] = torch.from_numpy(model.gene_vectors)
    if model.gene_table is not None:  # the user's gene embeddings of perturbation targets
        meta["gene_embeddings"] = list(model.gene_table.genes)
        weights["conditioning.gene_embeddings"] = torch.from_numpy(model.gene_table.vectors)
    if model.anchors is not None:
        weights["anchors.residuals"] = torch.from_numpy(model.anchors.residuals)
        weights["anchors.means"] = torch.from_numpy(model.anchors.means)
        if model.anchors.levels is not None:
            weights["anchors.levels"] = torch.from_numpy(model.anchors.levels)
    if model.passthrough is not None:
        weights["passthrough.means"] = torch.from_numpy(model.passthrough.means)
        weights["passthrough.overall"] = torch.from_numpy(
            np.asarray(model.passthrough.overall, dtype=np.float32)
        )
    tensors = {"weights": weights}
    if model._trainer_state is not None:
        meta["trainer"], tensors["trainer"] = model._trainer_state
    save_checkpoint(path, meta, tensors)


def load(cls: type[RNADiffusion], path, *, adata: ad.AnnData | None = None) -> RNADiffusion:
    """See :meth:`rnadiff.RNADiffusion.load`."""
    meta, tensors = load_checkpoint(path)
    meta_file = Path(path) / META
    if "weights" not in tensors:
        raise InputError(f"checkpoint {path} is incomplete: weights.safetensors is not listed")
    try:
        model = _build(cls, meta, tensors)
    except KeyError as err:
        raise InputError(f"{meta_file} lacks {err.args[0]!r}; the checkpoint is damaged") from None
    except (TypeError, ValueError, AttributeError) as err:
        raise InputError(f"{meta_file} holds a value rnadiff cannot use: {err}") from None
    if adata is not None:
        check_genes(adata.var_names, model.preprocess.genes, what="adata")
        model.registry.encode(adata.obs)  # same covariate columns, known values
        check_same_data(meta.get("fingerprint"), fingerprint(adata, model.setup))
        model.adata = adata
    return model


def _build(cls, meta: dict, tensors: dict) -> RNADiffusion:
    weights = tensors["weights"]
    file = "weights.safetensors"
    try:
        state = PreprocessState.from_json(
            meta["preprocess"],
            weights["preprocess.mean"].numpy(),
            weights["preprocess.std"].numpy(),
            weights["preprocess.expr_mean"].numpy() if "preprocess.expr_mean" in weights else None,
        )
    except KeyError as err:
        raise InputError(f"{file} lacks the tensor {err.args[0]!r}") from None
    genes = None
    if meta.get("gene_embeddings") is not None:
        vectors = weights["conditioning.gene_embeddings"].numpy()
        genes = GeneTable(tuple(meta["gene_embeddings"]), vectors)
    model = cls.__new__(cls)
    model._init(
        ModelConfig.from_dict(meta["model_config"]),
        meta["setup"],
        CovariateRegistry.from_dict(meta["registry"]),
        state,
        genes,
    )
    for prefix, module in (("model.", model.denoiser), ("ema.", model.ema)):
        found = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(found)
        except RuntimeError as err:  # missing keys or other shapes: another network
            first = str(err).strip().splitlines()
            raise InputError(
                f"{file} does not fit the network described in config.json ({first[-1]})"
            ) from None
    model.denoiser.eval()
    model.step, model.history = meta["step"], meta["history"]
    model.seen = {tuple(row) for row in meta.get("seen_conditions", [])}
    model.measured = {k: list(v) for k, v in meta.get("measured_values", {}).items()}
    model.engine.measured_within = {  # older checkpoints: none (overall values only)
        k: {label: list(v) for label, v in per.items()}
        for k, per in meta.get("measured_within", {}).items()
    }
    model.effect_scales = {k: float(v) for k, v in meta.get("effect_scales", {}).items()}
    model.spread_scale = float(meta.get("spread_scale", 1.0))  # older checkpoints: none
    if meta.get("anchors") is not None:  # older checkpoints: none (no mean anchoring)
        model.anchors = Anchors.from_json(
            meta["anchors"],
            weights["anchors.residuals"].numpy(),
            weights["anchors.means"].numpy(),
            weights["anchors.levels"].numpy() if "anchors.levels" in weights else None,
        )
    if meta.get("library_sizes") is not None:  # older checkpoints: none (no counts out)
        model._library_sizes = _counts.LibrarySizes.from_json(meta["library_sizes"])
    if "prior.gene_vectors" in weights:
        model.gene_vectors = weights["prior.gene_vectors"].numpy()
    model.prior = meta.get("prior")  # None in older checkpoints: co-expression alone
    model.fingerprint = meta.get("fingerprint")
    model.world_size = meta.get("distributed", {}).get("world_size", 1)
    if meta.get("passthrough") is not None:
        model.passthrough = Passthrough.from_json(
            meta["passthrough"],
            weights["passthrough.means"].numpy(),
            weights["passthrough.overall"].numpy(),
        )
    if meta.get("train_config"):
        # checkpoints from before max_epochs trained without a cap, and those from before
        # epochs trained exactly max_steps steps
        old = {"max_epochs": None, "epochs": None}
        model.train_config = TrainConfig(**{**old, **meta["train_config"]})
    if "trainer" in tensors:
        model._trainer_state = (meta["trainer"], tensors["trainer"])
    return model
