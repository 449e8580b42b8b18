"""Noise levels of cells to denoise (``RNADiffusion.denoise``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from rnadiff._errors import InputError
from rnadiff.data._expression import Source, matrix
from rnadiff.data._inputs import detect_input
from rnadiff.data._preprocessing import total_counts
from rnadiff.diffusion import technical_sigma
from rnadiff.model._data import other_genes, source_for
from rnadiff.model._output import output

if TYPE_CHECKING:
    import anndata as ad

    from rnadiff.model._model import RNADiffusion

logger = logging.getLogger("rnadiff")


def denoise_sigmas(model: RNADiffusion, adata: ad.AnnData, sigma, source: Source) -> np.ndarray:
    """Each cell's noise level: ``sigma`` for every cell, or ``"auto"``: its counting noise
    beyond the training cells', from its total counts."""
    if isinstance(sigma, str):
        if sigma != "auto":
            raise InputError(f"sigma must be a positive number or 'auto', got {sigma!r}")
        state = model.preprocess
        if state.input_type != "counts":
            raise InputError(
                "sigma='auto' needs a model trained on raw counts (it estimates counting "
                "noise from each cell's total counts); give sigma as a number"
            )
        if state.expr_mean is None or state.depth is None:
            raise InputError(
                "sigma='auto' needs the training cells' depth, which this model was saved "
                "without (an older rnadiff); give sigma as a number, or retrain"
            )
        X, _ = matrix(adata, source)
        if detect_input(X).kind != "counts":
            raise InputError(
                "sigma='auto' needs raw counts (integers) for the cells to denoise; give "
                "sigma as a number for other values"
            )
        depths = total_counts(X)
        sigmas = technical_sigma(
            depths,
            state.expr_mean,
            state.std,
            reference_depth=state.depth,
            target_sum=state.target_sum,
            floor=model.config.diffusion.sigma_min,
        )
        if len(depths) and np.median(depths) >= 0.8 * state.depth:
            logger.warning(
                "rnadiff: these cells are about as deep as the training cells (median %.0f "
                "vs %.0f counts), so sigma='auto' leaves most of them almost unchanged; "
                "give sigma as a number to denoise them anyway",
                np.median(depths),
                state.depth,
            )
        return sigmas
    try:
        value = float(sigma)
    except (TypeError, ValueError):
        raise InputError(f"sigma must be a positive number or 'auto', got {sigma!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise InputError(f"sigma must be a positive number or 'auto', got {sigma}")
    return np.full(adata.n_obs, value)


def denoise(model: RNADiffusion, adata, sigma, *, layer, key_added, inplace, batch_size, progress):
    """See :meth:`rnadiff.RNADiffusion.denoise` (arguments checked)."""
    z0 = model.model_space(adata, layer)
    sigmas = denoise_sigmas(model, adata, sigma, source_for(model, adata, layer))
    obs = adata.obs[[k for k in model.registry.keys if k in adata.obs]].copy()
    bar = (lambda b: tqdm(b, desc="denoising", leave=False)) if progress else None
    z = model.engine.denoise(z0, sigmas, obs, batch_size=batch_size, progress=bar)
    x = model.engine.to_log(z)
    info = {"method": "denoise", "sigma": sigma if sigma == "auto" else float(sigma)}
    info |= {"sigma_median": float(np.median(sigmas)), "layer": layer}
    if inplace:
        full = model.log_expression(adata, layer=layer, genes=adata.var_names)
        full[:, adata.var_names.get_indexer(model.genes)] = x
        adata.layers[key_added] = full
        adata.obs[f"{key_added}_sigma"] = sigmas
        adata.uns[key_added] = {**info, "n_modelled_genes": len(model.genes)}
        return None
    others = other_genes(model, adata, layer)
    result = output(model, x, adata.obs, info, others=others, names=adata.obs_names)
    result.obs["rnadiff_sigma"] = sigmas
    return result
