"""Checks of user input that fail early with a specific, actionable message."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from rnadiff._errors import InputError


def _values(X) -> np.ndarray:
    """The stored values of a dense or sparse matrix (implicit zeros are fine everywhere)."""
    return X.data if sp.issparse(X) else np.asarray(X)


def check_obs_columns(
    obs: pd.DataFrame, keys: Iterable[str | None], *, what: str = "adata"
) -> None:
    """Every key must be a column of ``obs``, and hold no missing values."""
    for key in keys:
        if key is None:
            continue
        if key not in obs.columns:
            raise InputError(
                f"column {key!r} not found in {what}.obs; available columns: {list(obs.columns)}"
            )
        n_missing = int(obs[key].isna().sum())
        if n_missing:
            raise InputError(
                f"column {key!r} of {what}.obs has {n_missing} missing (NaN) values; "
                "fill or drop those cells first"
            )


def check_numeric_column(obs: pd.DataFrame, key: str) -> np.ndarray:
    """A continuous covariate must be numeric and finite."""
    try:
        values = pd.to_numeric(obs[key]).to_numpy(dtype=np.float64)
    except (ValueError, TypeError) as err:
        raise InputError(
            f"column {key!r} must be numeric (a continuous covariate): {err}"
        ) from None
    if not np.isfinite(values).all():
        raise InputError(f"column {key!r} holds infinite values")
    return values


def check_matrix(X, *, what: str = "X", require_counts: bool = False) -> None:
    """Expression values must be finite and non-negative; counts must also be integers.

    A matrix on disk (backed AnnData) is checked a block of cells at a time."""
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(f"{what} is empty (shape {X.shape})")
    if not isinstance(X, np.ndarray) and not sp.issparse(X):  # on disk: stream it
        for start in range(0, X.shape[0], 16384):
            check_matrix(X[start : start + 16384], what=what, require_counts=require_counts)
        return
    values = _values(X)
    if not np.issubdtype(values.dtype, np.number):
        raise InputError(f"{what} must be numeric, got dtype {values.dtype}")
    if not np.isfinite(values).all():
        n_bad = int((~np.isfinite(values)).sum())
        raise InputError(f"{what} holds {n_bad} NaN or infinite values")
    if (values < 0).any():
        raise InputError(
            f"{what} holds {int((values < 0).sum())} negative values; rnadiff expects raw counts "
            "or log-normalized expression (not scaled or centered data)"
        )
    if require_counts and not is_integer_valued(X):
        raise InputError(
            f"{what} must hold raw counts (non-negative integers) but has non-integer values; "
            "pass input='lognorm' if it is log-normalized"
        )


def is_integer_valued(X) -> bool:
    values = _values(X)
    if np.issubdtype(values.dtype, np.integer):
        return True
    return bool(np.all(np.mod(values, 1) == 0))


def check_unique_names(names: Sequence[str], *, what: str) -> None:
    index = pd.Index(names)
    if not index.is_unique:
        dup = index[index.duplicated()].unique()[:5].tolist()
        raise InputError(f"{what} are not unique (e.g. {dup}); make them unique first")


def check_genes(
    available: Sequence[str],
    required: Sequence[str],
    *,
    what: str = "data",
    reference: str = "the model",
    possessive: str = "the model's",
    hint: str = "use data with the same gene names (var_names) as the training data",
) -> None:
    """All genes of ``reference`` (the model's, by default) must be present in the data (in
    any order); ``hint`` ends the error message."""
    missing = pd.Index(required).difference(pd.Index(available))
    if len(missing):
        raise InputError(
            f"genes do not match {reference}: {len(missing)} of {possessive} {len(required)} "
            f"genes are missing from {what} (e.g. {missing[:5].tolist()}); {hint}"
        )
