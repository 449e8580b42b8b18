"""The model's edge to AnnData: where expression is read, and the training data's fingerprint."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from rnadiff._errors import InputError
from rnadiff.data._expression import Source, matrix
from rnadiff.data._genes import iter_row_chunks

if TYPE_CHECKING:
    from rnadiff.model._model import RNADiffusion


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
