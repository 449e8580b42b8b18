"""Output formatting: the AnnData that every method of the model returns.

One schema for every method, documented once here:

* ``X``: log-normalized expression (natural ``log1p`` of counts per ``target_sum``) of the
  model's genes;
* ``obs``: the condition of each cell (registered covariates) plus what the method adds;
* ``uns['rnadiff']``: how the result was made: ``method`` (``generate``, ``predict``,
  ``denoise``, ``design``), the settings of the call, ``rnadiff_version`` and ``input`` (what
  the training data held).
"""

from __future__ import annotations

from collections.abc import Mapping

import anndata as ad
import numpy as np
import pandas as pd

from rnadiff._version import __version__


def to_anndata(log_x: np.ndarray, obs: pd.DataFrame, info: dict, *, genes, input_description):
    """An AnnData of log expression ``log_x`` with ``obs`` and ``uns['rnadiff'] = info``."""
    obs = obs.copy()
    obs.index = obs.index.astype(str)
    for col in obs.columns:
        if obs[col].dtype == object:
            obs[col] = obs[col].astype("category")
    var = pd.DataFrame(index=pd.Index(list(genes), name=None))
    out = ad.AnnData(X=np.asarray(log_x, dtype=np.float32), obs=obs, var=var)
    out.uns["rnadiff"] = {
        **info,
        "rnadiff_version": __version__,
        "input": input_description,
    }
    return out


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
