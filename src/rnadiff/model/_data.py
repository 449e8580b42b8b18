"""The model's edge to AnnData: where expression is read, and the training data's fingerprint."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from rnadiff._errors import InputError
from rnadiff.data._covariates import CovariateRegistry
from rnadiff.data._expression import Source, choose_source, matrix
from rnadiff.data._genes import iter_row_chunks
from rnadiff.data._preprocessing import MODEL_SCALE_TOLERANCE, rescaled
from rnadiff.data._preprocessing import log_expression as state_log_expression
from rnadiff.data._validation import check_genes, check_unique_names

SETUP_KEY = "rnadiff_setup"

if TYPE_CHECKING:
    from rnadiff.model._model import RNADiffusion

logger = logging.getLogger("rnadiff")


class EngineField:
    """An attribute of the model kept on its sampling engine (what sampling knows)."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, model, owner=None):
        return self if model is None else getattr(model.engine, self.name)

    def __set__(self, model, value) -> None:
        setattr(model.engine, self.name, value)


def source_for(model: RNADiffusion, adata: ad.AnnData, layer: str | None) -> Source:
    """Where to read ``adata``'s expression: ``layer`` when given; else the training source
    when ``adata`` has it (e.g. ``layers['counts']``); else ``X``."""
    if layer is not None:
        return Source(layer=layer)
    trained = Source(layer=model.setup.get("layer"), use_raw=bool(model.setup.get("use_raw")))
    return trained if trained.present(adata) else Source()


def check_cells(adata, what: str) -> None:
    """``adata`` must be an AnnData with at least one cell."""
    if not isinstance(adata, ad.AnnData):
        raise InputError(f"{what} must be an AnnData, got {type(adata).__name__}")
    if adata.n_obs == 0:
        raise InputError(f"{what} has no cells")
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()].unique()[:3].tolist()
        raise InputError(
            f"cell names (obs_names) of {what} are not unique (e.g. {dup}); outputs keep them, "
            "so make them unique first (adata.obs_names_make_unique())"
        )


def fingerprint(adata: ad.AnnData, setup: dict) -> dict:
    """What identifies the training data: cells, genes, covariate values and a hash of the
    expression values (so a resumed run trains on the same data only)."""
    source = Source(layer=setup.get("layer"), use_raw=bool(setup.get("use_raw")))
    M, names = matrix(adata, source)
    keys = [
        setup.get(k)
        for k in ("perturbation_key", "cell_type_key", "batch_key", "dose_key", "time_key")
    ]
    keys += list(setup.get("categorical_keys", [])) + list(setup.get("continuous_keys", []))
    keys = [k for k in keys if k]
    covs = hashlib.sha256()
    for key in keys:
        covs.update(key.encode() + b"\x1f")
        values = pd.util.hash_pandas_object(adata.obs[key].astype(str), index=False)
        covs.update(values.to_numpy().tobytes())
    data = hashlib.sha256()
    for _, chunk in iter_row_chunks(M, chunk_size=4096):
        block = sp.csr_matrix(chunk)
        block.sum_duplicates()
        for part in (block.indptr, block.indices, block.data.astype(np.float64)):
            data.update(np.ascontiguousarray(part).tobytes())
    return {
        "n_cells": int(adata.n_obs),
        "n_genes": int(adata.n_vars),
        "genes": hashlib.sha256("\x1f".join(map(str, names)).encode()).hexdigest(),
        "covariates": covs.hexdigest(),
        "values": data.hexdigest(),
    }


def check_same_data(saved: dict | None, found: dict) -> None:
    """Refuse data whose fingerprint differs from the one the checkpoint was trained on."""
    if not saved:
        return  # checkpoints from before 2026-12 carry none
    what = {
        "n_cells": "a different number of cells",
        "n_genes": "a different number of genes",
        "genes": "different genes",
        "covariates": "different covariate values",
        "values": "different expression values",
    }
    differ = [what[k] for k in what if saved.get(k) != found.get(k)]
    if differ:
        raise InputError(
            f"this data is not the data the model was trained on ({', '.join(differ)}: "
            f"{found['n_cells']} cells x {found['n_genes']} genes, trained on "
            f"{saved['n_cells']} x {saved['n_genes']}); resume training on the same data only, "
            "or train a new model into another folder"
        )


def setup(adata: ad.AnnData, **options) -> dict:
    """Check and record :meth:`RNADiffusion.setup_anndata`'s options in
    ``adata.uns['rnadiff_setup']`` (the expression source resolved, see
    :func:`rnadiff.data._expression.choose_source`)."""
    if options["control"] is not None and options["perturbation_key"] is None:
        raise InputError("control given without perturbation_key")
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(f"adata is empty ({adata.n_obs} cells x {adata.n_vars} genes)")
    check_unique_names(adata.obs_names, what="cell names (obs_names)")
    check_unique_names(adata.var_names, what="gene names (var_names)")
    source, _ = choose_source(adata, layer=options.pop("layer"), use_raw=options.pop("use_raw"))
    setup = dict(options)
    setup["categorical_keys"] = list(setup["categorical_keys"])
    setup["continuous_keys"] = list(setup["continuous_keys"])
    setup["combination_sep"] = setup["combination_sep"] or None
    if isinstance(setup.get("smiles"), Mapping):  # stored as a plain dict of text
        setup["smiles"] = {str(k): v for k, v in setup["smiles"].items()}
    setup |= {"layer": source.layer, "use_raw": source.use_raw}
    CovariateRegistry.fit(adata.obs, setup)  # validates columns, values and the control
    adata.uns[SETUP_KEY] = setup
    return setup


def log_expression(model: RNADiffusion, adata: ad.AnnData, layer=None, genes=None) -> np.ndarray:
    """See :meth:`RNADiffusion.log_expression`."""
    genes = model.genes if genes is None else list(genes)
    check_genes(adata.var_names, genes, what="the data")
    if "rnadiff" in adata.uns and layer is None:  # rnadiff's own output: natural log already
        x = adata[:, genes].X
        x = np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32)
        info = adata.uns["rnadiff"]
        theirs, ours = info.get("scale") if isinstance(info, dict) else None, model.preprocess.scale
        if theirs and ours:
            x = rescaled(
                x,
                ours / theirs,
                tolerance=MODEL_SCALE_TOLERANCE,
                why=f"these cells (rnadiff output) are log values of {theirs:.4g} per cell, "
                f"the model's of {ours:.4g}",
                done="rescaled to the model's scale",
            )
        return x
    source = source_for(model, adata, layer)
    return state_log_expression(
        adata, model.preprocess, layer=source.layer, use_raw=source.use_raw, genes=genes
    )


def log_of(model: RNADiffusion, adata, what: str, layer: str | None = None) -> np.ndarray:
    """Log expression of the user's cells ``adata`` (named ``what`` in errors)."""
    check_cells(adata, what)
    try:
        return model.log_expression(adata, layer=layer)
    except InputError as err:
        raise InputError(f"{what}: {err}") from None


def other_genes(model: RNADiffusion, adata: ad.AnnData, layer: str | None):
    """The unmodelled genes of cells ``adata`` (missing ones: their training mean)."""
    if model.passthrough is None:
        return None
    genes = list(model.passthrough.genes)
    out = np.tile(model.passthrough.overall.astype(np.float32), (adata.n_obs, 1))
    have = pd.Index(genes).isin(adata.var_names)
    if not have.all():
        logger.warning(
            "rnadiff: %d of the %d genes the model passes through are not in these cells; "
            "outputs carry their training mean",
            int((~have).sum()),
            len(genes),
        )
    if have.any():
        present = [g for g, h in zip(genes, have, strict=True) if h]
        out[:, have] = model.log_expression(adata, layer=layer, genes=present)
    return out


def realism_cells(model: RNADiffusion, given, seed: int, layer=None, max_real: int = 5000):
    """Real cells for the realism score: ``given``, else a seeded sample of the training
    cells, else None."""
    if given is not None:
        return log_of(model, given, "realism_reference", layer)
    if model.adata is None:
        return None
    cells = model.adata
    if cells.n_obs > max_real:  # normalize only the cells the score uses
        rng = np.random.default_rng(seed)
        cells = cells[np.sort(rng.choice(cells.n_obs, max_real, replace=False))]
    return model.log_expression(cells)
