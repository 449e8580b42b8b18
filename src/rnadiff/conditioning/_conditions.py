"""Conditions of cells as the model keys them: pure bookkeeping on ``obs`` tables.

A cell's *condition* is the value of every registered covariate. Categorical values are kept
canonical (the parts of a combination sorted, so ``B+A`` is ``A+B``); a condition tuple holds
the categorical covariates in registry order (``None``: unset). The sampling engine uses these
to find which conditions were measured in training, which cells need a transfer, and which
pairs of measured conditions calibrate the spread of counterfactual cells.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from rnadiff._errors import InputError
from rnadiff.conditioning._transfer import context_of
from rnadiff.data._covariates import Covariate, CovariateRegistry

TRANSFERS = ("guide", "compose", "none")


def canonical(cov: Covariate, value) -> str | None:
    """A categorical value as the model keys it: combination parts sorted (None: unset)."""
    if not pd.notna(value):
        return None
    return (cov.sep or "+").join(sorted(cov.parts(value)))


def condition_rows(registry: CovariateRegistry, obs: pd.DataFrame) -> list[tuple]:
    """Each row's categorical condition as a tuple (combination parts sorted; None: unset);
    empty tuples when ``obs`` lacks a categorical covariate."""
    cats = [c for c in registry.covariates if c.categorical]
    if not cats or any(c.key not in obs for c in cats):
        return [()] * len(obs)
    columns = [[canonical(c, v) for v in obs[c.key]] for c in cats]
    return list(zip(*columns, strict=True))


def given_condition_rows(registry: CovariateRegistry, obs: pd.DataFrame) -> list[tuple]:
    """As :func:`condition_rows`, but a categorical covariate missing from ``obs`` is unset
    (None) rather than making every row empty: the conditions a request gives in part."""
    cats = [c for c in registry.covariates if c.categorical]
    columns = [
        [canonical(c, v) for v in obs[c.key]] if c.key in obs else [None] * len(obs) for c in cats
    ]
    return list(zip(*columns, strict=True))


def condition_keys(registry: CovariateRegistry, obs: pd.DataFrame) -> set[tuple]:
    """The distinct categorical conditions of ``obs`` (the ones measured, for training cells)."""
    return set(condition_rows(registry, obs)) - {()}


def perturbation_index(registry: CovariateRegistry) -> int:
    """Position of the perturbation in a condition tuple."""
    cats = [c.key for c in registry.covariates if c.categorical]
    return cats.index(registry.perturbation_key)


def context_and_perturbation(
    registry: CovariateRegistry, obs: pd.DataFrame
) -> list[tuple[tuple, str | None]]:
    """Each cell's ``(context, perturbation)``: its categorical condition split into the
    perturbation and everything else."""
    ip = perturbation_index(registry)
    return [(context_of(r, ip), r[ip]) for r in condition_rows(registry, obs)]


def condition_columns(registry: CovariateRegistry, obs: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each registered covariate that ``obs`` has: categorical values canonical (None: unset),
    continuous ones as floats (NaN: unset)."""
    out = {}
    for cov in registry.covariates:
        if cov.key not in obs:
            continue
        if cov.categorical:
            out[cov.key] = np.array([canonical(cov, v) for v in obs[cov.key]], dtype=object)
        else:
            out[cov.key] = pd.to_numeric(obs[cov.key], errors="coerce").to_numpy(np.float64)
    return out


def row_keys(columns: list[np.ndarray], n: int) -> np.ndarray:
    """One string per row joining its values in ``columns`` (strings as they are, other
    values by ``repr``); all ``""`` without columns."""
    if not columns:
        return np.full(n, "", dtype=object)
    rows = zip(*columns, strict=True)
    keys = ["\x1f".join(v if isinstance(v, str) else repr(v) for v in r) for r in rows]
    return np.array(keys, dtype=object)


def complete(columns: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Rows with a value in every column (not None, not NaN)."""
    ok = np.ones(n, dtype=bool)
    for values in columns.values():
        ok &= pd.notna(values)
    return ok


def condition_labels(registry: CovariateRegistry, obs: pd.DataFrame) -> np.ndarray:
    """Each row's full condition as one string; rows with a missing value get ``""``."""
    columns = condition_columns(registry, obs)
    labels = row_keys(list(columns.values()), len(obs))
    labels[~complete(columns, len(obs))] = ""
    return labels


def measured_values(
    registry: CovariateRegistry, obs: pd.DataFrame, max_values: int = 1000
) -> dict[str, list[float]]:
    """The distinct training values of each continuous covariate (a covariate with more than
    ``max_values`` of them is densely measured and left out)."""
    out = {}
    for cov in registry.covariates:
        if cov.categorical or cov.key not in obs.columns:
            continue
        values = np.unique(pd.to_numeric(obs[cov.key], errors="coerce").dropna())
        if 2 <= len(values) <= max_values:
            out[cov.key] = [float(v) for v in values]
    return out


def measured_within(
    registry: CovariateRegistry, obs: pd.DataFrame, max_values: int = 1000
) -> dict[str, dict[str, list[float]]]:
    """The distinct training values of each continuous covariate within each categorical
    condition (:func:`condition_label`), where a condition has at least two: e.g. the doses
    measured for each drug in each cell type."""
    rows = [condition_label(r) for r in condition_rows(registry, obs)]
    out: dict[str, dict[str, list[float]]] = {}
    for cov in registry.covariates:
        if cov.categorical or cov.key not in obs.columns:
            continue
        values = pd.to_numeric(obs[cov.key], errors="coerce").to_numpy(dtype=float)
        frame = pd.DataFrame({"label": rows, "value": values}).dropna().drop_duplicates()
        per = {
            str(label): sorted(float(v) for v in group["value"])
            for label, group in frame.groupby("label", sort=True)
        }
        per = {k: v for k, v in per.items() if 2 <= len(v) <= max_values}
        if per:
            out[cov.key] = per
    return out


def condition_label(row: tuple) -> str:
    """A categorical condition tuple as one string (the key of :func:`measured_within`)."""
    return "\x1f".join("" if v is None else str(v) for v in row)


def transfer_mask(
    registry: CovariateRegistry, seen: Iterable[tuple], obs: pd.DataFrame, transfer: str
) -> np.ndarray:
    """Cells with a perturbation in a context (all other categorical covariates given)
    whose combination never occurred in training (``seen``)."""
    if transfer not in TRANSFERS:
        raise InputError(f"transfer must be 'guide', 'compose' or 'none', got {transfer!r}")
    n = len(obs)
    pkey, control = registry.perturbation_key, registry.control
    others = [c.key for c in registry.covariates if c.categorical and c.key != pkey]
    if transfer == "none" or control is None or pkey not in obs or not others:
        return np.zeros(n, dtype=bool)
    has_effect = (obs[pkey].notna() & (obs[pkey].astype(str) != control)).to_numpy()
    in_context = obs.reindex(columns=others).notna().all(axis=1).to_numpy()
    seen = set(seen)
    unseen = np.array([row not in seen for row in condition_rows(registry, obs)])
    return has_effect & in_context & unseen


def parts_measured_here(
    registry: CovariateRegistry, seen: Iterable[tuple], obs: pd.DataFrame
) -> np.ndarray:
    """Cells whose perturbation is a combination of two or more parts each of which, and the
    control, was measured (in training, ``seen``) in the cell's own context (every other
    categorical covariate as the cell's): their parts' effects are known where they are."""
    n = len(obs)
    pkey, control = registry.perturbation_key, registry.control
    if pkey is None or control is None or pkey not in obs:
        return np.zeros(n, dtype=bool)
    cov, ip, seen = registry[pkey], perturbation_index(registry), set(seen)

    def known_here(row: tuple) -> bool:
        if not row or None in row or len(parts := cov.parts(row[ip])) < 2:
            return False
        return all((*row[:ip], t, *row[ip + 1 :]) in seen for t in [control, *parts])

    rows = condition_rows(registry, obs)
    answer = {row: known_here(row) for row in set(rows)}  # cells share their conditions
    return np.fromiter((answer[row] for row in rows), dtype=bool, count=n)


def chemical_tokens(registry: CovariateRegistry) -> set[str]:
    """The perturbation tokens that are drugs: with a structure, or measured at a positive
    dose (not the control)."""
    cov = registry[registry.perturbation_key]
    return ({name for name, _ in cov.molecules} | set(cov.dosed)) - {str(registry.control)}


def never_measured(
    registry: CovariateRegistry,
    seen: Iterable[tuple],
    obs: pd.DataFrame,
    trained: set[str],
    featured: Callable[[str], bool],
    *,
    combinations: bool = False,
) -> np.ndarray:
    """Cells whose perturbation was measured in no context at all (``seen``) and is a
    combination of ``trained`` tokens or holds tokens described by their features only
    (``featured(token)``: a new drug or gene): there is no context to take its effect from, so it is
    not transferred. With ``combinations``: only the combinations of trained tokens (composed
    from their parts, :func:`rnadiff.sampling.combination_composition`)."""
    pkey = registry.perturbation_key
    out = np.zeros(len(obs), dtype=bool)
    if pkey is None or pkey not in obs:
        return out
    cov = registry[pkey]
    at = perturbation_index(registry)
    measured = {row[at] for row in seen if len(row) > at}
    for value in set(obs[pkey].dropna()):
        canon = canonical(cov, value)
        if canon is None or canon in measured:
            continue
        parts = cov.parts(canon)
        new = [t for t in parts if t not in trained]
        pair = len(parts) > 1 and not new
        if pair or (new and all(map(featured, new)) and not combinations):
            out |= (obs[pkey] == value).to_numpy()
    return out


def spread_pairs(
    registry: CovariateRegistry, obs: pd.DataFrame, min_cells: int
) -> list[tuple[np.ndarray, dict, np.ndarray]]:
    """``(source rows, target changes, target rows)`` of the transports between measured
    conditions that calibrate the spread, those with the most target cells first: a
    context's control cells to each perturbation measured there (the target's continuous
    values with it), and neighbouring measured values of each continuous covariate with
    everything else equal (both ways). Both sides need ``min_cells`` cells."""
    pkey, control = registry.perturbation_key, registry.control
    n = len(obs)
    columns = condition_columns(registry, obs)
    ok = complete(columns, n)
    labels = row_keys(list(columns.values()), n)
    conts = {k: v for k, v in columns.items() if not registry[k].categorical}

    def key_without(*drop: str) -> np.ndarray:
        return row_keys([v for k, v in columns.items() if k not in drop], n)

    out = []
    if pkey in columns and control is not None:
        context = key_without(pkey, *conts)
        is_ctrl = ok & (columns[pkey] == control)
        for label in sorted(set(labels[ok & ~is_ctrl])):
            target = np.flatnonzero(labels == label)
            first = target[0]
            source = np.flatnonzero(is_ctrl & (context == context[first]))
            changes = {pkey: columns[pkey][first]}
            changes |= {k: float(v[first]) for k, v in conts.items()}
            out.append((source, changes, target))
    for key, values in conts.items():
        rest = key_without(key)
        for group in sorted(set(rest[ok])):
            rows = ok & (rest == group)
            points = np.unique(values[rows])
            for a, b in itertools.pairwise(points):
                for x, y in ((a, b), (b, a)):
                    source = np.flatnonzero(rows & (values == x))
                    target = np.flatnonzero(rows & (values == y))
                    out.append((source, {key: float(y)}, target))
    out = [p for p in out if len(p[0]) >= min_cells and len(p[2]) >= min_cells]
    return sorted(out, key=lambda p: -len(p[2]))  # stable: ties keep their order


def describe(registry: CovariateRegistry, row: pd.Series, changes: dict, own: bool = False) -> str:
    """``key=value`` of a condition: ``row``'s covariates, with ``changes`` applied unless
    ``own``."""
    values = {k: row[k] for k in registry.keys if k in row.index}
    if not own:
        values |= dict(changes)
    return ", ".join(f"{k}={v}" for k, v in values.items())
