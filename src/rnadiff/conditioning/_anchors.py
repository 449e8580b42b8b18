"""Mean anchors: the model's error at each measured condition, and the correction a predicted
cell takes from them. Pure bookkeeping on ``obs`` tables and arrays.

A counterfactual of a context's control cells under a condition measured in training should
reproduce that condition's mean; the network's estimate misses it by a residual

.. math::

    r(c, p, v) = [\\bar{x}(c, p, v) - \\bar{x}(c, \\text{control})]
                 - \\frac{1}{m} \\sum_i [\\hat{x}_i(c, p, v) - x_i],

the mean log expression of the training cells of context ``c`` (the other categorical
covariates) under perturbation ``p`` at continuous values ``v`` (dose, time) minus that of the
context's control cells, minus the mean change the model predicts for ``m`` of those control
cells ``x_i`` (each against its own values, so the cells' sampling noise cancels; the
reconstruction's own bias is part of it: the control's residual is that bias alone). Each
gene's residual is shrunk towards 0 by its sampling variance :math:`\\nu_g` (the two training
means', :math:`s_g^2 (1/n_p + 1/n_c)`, and the mean predicted change's over the ``m`` cells),
:math:`r_g \\max(0, 1 - \\nu_g / r_g^2)`: a gene whose residual is within its noise takes none,
so the correction does not add the training means' noise to genes the model already gets
right (chosen on inner splits and simulated worlds the benchmark does not score,
``benchmarks/results/studies/anchor/README.md``).

A predicted cell whose source is its context's control takes:

- a measured condition: its residual;
- a measured perturbation at an unmeasured continuous value: the residuals of the measured
  values interpolated linearly (in log dose for a dose) between the two neighbours, the nearest
  one outside the measured range; at dose 0, the control's;
- a combination of ``k`` parts measured in the context:
  :math:`\\sum_j r(c, p_j) - (k - 1)\\, r(c, \\text{control})`;
- with its interaction taken from measured contexts ``c_i`` (weights ``w_i``, see
  :func:`rnadiff.sampling.interaction_transfer`), in addition
  :math:`\\sum_i w_i [r(c_i, p) - \\sum_j r(c_i, p_j) + (k - 1)\\, r(c_i, \\text{control})]`.

A gene raised is shifted; a gene lowered is scaled towards 0 by ``1 + r / m``, ``m`` the mean of
the model's prediction the residual was measured against (composed alike), so values stay
non-negative and the mean moves by the residual without clipping raising it
(:func:`anchor_cells`, cell by cell: chunked predictions equal whole ones).

Without a perturbation column (a time course: continuous covariates only, e.g. hours in a
medium), the source is not a control but any measured condition ``s``, and the anchors are
the transports from it to the measured conditions of its categorical context ``t`` (itself
included: the reconstruction's bias),

.. math::

    r(s \\to t) = [\\bar{x}(t) - \\bar{x}(s)] - \\frac{1}{m} \\sum_{i \\in s} [\\hat{x}_i(t) - x_i],

shrunk alike, except for its part on the training cells' top principal axes, which is kept
whole (:func:`pooled_shrink`: a course moves many genes together by amounts each within its own
noise); a cell predicted from ``s`` to a value between two measured ones takes their
residuals interpolated (the nearest outside the range): a 24 h -> 48 h prediction between
measured 24 h and 72 h takes half the residual of 24 h -> 24 h and half that of 24 h -> 72 h
(chosen on the HSMM inner split the benchmark does not score,
``benchmarks/results/studies/anchor``).

Anything else (unseen perturbations, other contexts, other sources) takes none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rnadiff.conditioning import _conditions as conditions
from rnadiff.conditioning._transfer import context_of
from rnadiff.data._covariates import CovariateRegistry


def shrink(residual: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Each gene's residual shrunk towards 0 by its sampling variance ``noise``:
    ``r * max(0, 1 - noise / r^2)`` (positive-part James-Stein, gene by gene)."""
    r2 = residual * residual
    return residual * np.maximum(0.0, 1.0 - noise / np.maximum(r2, 1e-300))


def pooled_shrink(residual: np.ndarray, noise: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """A residual's part on ``axes`` (``(n_genes, k)``, orthonormal: the training cells'
    principal axes) kept whole, the rest shrunk gene by gene (:func:`shrink`).

    A time course moves many genes together by amounts each within its own noise; their
    coherent part lies on the cells' main axes, where the noise of ``n_genes`` genes averages
    out, so it is kept; what is left is one gene's own and is shrunk by its noise."""
    coherent = axes @ (axes.T @ residual)
    return coherent + shrink(residual - coherent, noise)


def anchor_targets(
    registry: CovariateRegistry, obs: pd.DataFrame
) -> list[tuple[np.ndarray, dict, np.ndarray]]:
    """``(source rows, target changes, target rows)`` of every measured condition (the control
    included) whose context has control cells: the source is the context's control cells,
    the changes are the condition's perturbation and continuous values. Those with the most
    target cells first."""
    pkey, control = registry.perturbation_key, registry.control
    if pkey is None or control is None or pkey not in obs:
        return []
    n = len(obs)
    columns = conditions.condition_columns(registry, obs)
    ok = conditions.complete(columns, n)
    labels = conditions.row_keys(list(columns.values()), n)
    conts = {k: v for k, v in columns.items() if not registry[k].categorical}
    context = conditions.row_keys(
        [v for k, v in columns.items() if k != pkey and k not in conts], n
    )
    is_ctrl = ok & (columns[pkey] == control)
    # rows of each condition and each context's control rows, by one sort (not a scan each)
    codes, uniques = pd.factorize(labels)
    codes = np.where(ok, codes, -1)
    groups = _rows_by(codes)
    ctx_codes, _ = pd.factorize(context)
    controls = _rows_by(np.where(is_ctrl, ctx_codes, -1))
    out = []
    for code in sorted(groups, key=lambda c: uniques[c]):
        target = groups[code]
        first = target[0]
        source = controls.get(ctx_codes[first])
        if source is None:
            continue
        changes = {pkey: columns[pkey][first]} | {k: float(v[first]) for k, v in conts.items()}
        out.append((source, changes, target))
    return sorted(out, key=lambda p: -len(p[2]))


def transport_targets(
    registry: CovariateRegistry, obs: pd.DataFrame
) -> list[tuple[np.ndarray, dict, np.ndarray]]:
    """``(source rows, target changes, target rows)`` of a time course (no perturbation
    column, at least one continuous covariate): every measured condition as a source, to every
    measured condition of its categorical context (itself included); the changes are the
    target's continuous values. Nearest first (each source to itself, then to its neighbouring
    measured values, in the order of the continuous values), then those with the most target
    cells: a cap on their number (``calibrate_means``' ``max_conditions``) drops every
    source's farthest transports, not whole sources."""
    if registry.perturbation_key is not None and registry.control is not None:
        return []
    n = len(obs)
    columns = conditions.condition_columns(registry, obs)
    conts = {k: v for k, v in columns.items() if not registry[k].categorical}
    if not conts or any(c.key not in obs for c in registry.covariates if c.categorical):
        return []
    ok = conditions.complete(columns, n)
    codes, uniques = pd.factorize(conditions.row_keys(list(columns.values()), n))
    groups = _rows_by(np.where(ok, codes, -1))
    context = conditions.row_keys(
        [v for k, v in columns.items() if registry[k].categorical], n
    )  # fmt: skip
    by_context: dict[str, list[int]] = {}
    for code in sorted(groups, key=lambda c: uniques[c]):
        by_context.setdefault(context[groups[code][0]], []).append(code)
    out = []
    for members in by_context.values():
        value = {c: tuple(float(v[groups[c][0]]) for v in conts.values()) for c in members}
        members = sorted(members, key=value.get)  # in the order of the continuous values
        for i, s in enumerate(members):
            for j, t in enumerate(members):
                changes = dict(zip(conts, value[t], strict=True))
                out.append((abs(i - j), groups[s], changes, groups[t]))
    out.sort(key=lambda p: (p[0], -len(p[3])))  # stable: ties keep the order above
    return [(s, changes, t) for _, s, changes, t in out]


Combination = dict[int, float]  # anchor index -> weight


@dataclass(frozen=True)
class Anchors:
    """Residuals of measured conditions (see the module doc).

    Parameters
    ----------
    rows
        Each anchor's categorical condition (registry order, combination parts sorted).
    keys, log
        The continuous covariates of ``values`` and whether each is interpolated in log
        (a dose).
    values
        ``(n_anchors, len(keys))`` continuous values (NaN: unset).
    residuals
        ``(n_anchors, n_genes)`` shrunk residuals, log expression.
    means
        ``(n_anchors, n_genes)`` the mean of the model's prediction the residual corrects
        (the reference by which :func:`anchor_cells` scales lowered genes).
    n_cells
        Training cells of each anchor's condition.
    sources
        ``(n_anchors, len(keys))`` continuous values of a transport's source condition (the
        same categorical condition; see :func:`transport_targets`); all NaN (the default):
        the source is the context's control cells.
    """

    rows: tuple[tuple, ...]
    keys: tuple[str, ...]
    log: tuple[bool, ...]
    values: np.ndarray
    residuals: np.ndarray
    means: np.ndarray
    n_cells: np.ndarray
    sources: np.ndarray | None = None
    # each condition's training mean (log expression; None: a checkpoint from before they were
    # kept), the level generate() moves its cells to
    levels: np.ndarray | None = None
    _by_row: dict = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.sources is None:
            object.__setattr__(self, "sources", np.full_like(self.values, np.nan))
        by_row: dict[tuple, list[int]] = {}
        for i, row in enumerate(self.rows):
            by_row.setdefault(tuple(row), []).append(i)
        object.__setattr__(self, "_by_row", by_row)

    def __len__(self) -> int:
        return len(self.rows)

    # ------------------------------------------------------------ persistence
    def to_json(self) -> dict:
        """Everything but the residuals and means (stored as tensors)."""
        return {
            "rows": [list(r) for r in self.rows],
            "keys": list(self.keys),
            "log": list(self.log),
            "values": [[None if np.isnan(v) else float(v) for v in r] for r in self.values],
            "n_cells": [int(n) for n in self.n_cells],
            "sources": [[None if np.isnan(v) else float(v) for v in r] for r in self.sources],
        }

    @classmethod
    def from_json(
        cls, meta: dict, residuals: np.ndarray, means: np.ndarray, levels: np.ndarray | None = None
    ) -> Anchors:
        shape = (len(meta["rows"]), len(meta["keys"]))

        def grid(rows) -> np.ndarray:
            out = [[np.nan if v is None else v for v in r] for r in rows]
            return np.array(out, dtype=np.float64).reshape(shape)

        values = grid(meta["values"])
        sources = grid(meta["sources"]) if "sources" in meta else None  # older: controls
        return cls(
            tuple(tuple(r) for r in meta["rows"]),
            tuple(meta["keys"]),
            tuple(bool(b) for b in meta["log"]),
            values,
            np.asarray(residuals, dtype=np.float32),
            np.asarray(means, dtype=np.float32),
            np.asarray(meta["n_cells"], dtype=np.int64),
            sources,
            None if levels is None else np.asarray(levels, dtype=np.float32),
        )

    # ----------------------------------------------------------------- lookup
    def level(
        self, registry: CovariateRegistry, row: tuple, values: np.ndarray, *, control: bool = False
    ) -> np.ndarray | None:
        """The training mean (log expression) of condition ``row`` (categorical tuple, None:
        unset) at continuous ``values`` (order of ``keys``; NaN: unset), or of its context's
        control (``control``; its dose is 0): the measured rows that match, mixed by their
        cells; None when none matches, or without levels (older checkpoints)."""
        if self.levels is None:
            return None
        ip = conditions.perturbation_index(registry)
        want = (*row[:ip], registry.control, *row[ip + 1 :]) if control else tuple(row)
        if not control and want[ip] is None:
            return None  # a mixture over perturbations
        given = [  # continuous values asked for (the control's dose is 0 whatever is asked)
            j
            for j, key in enumerate(self.keys)
            if not np.isnan(values[j]) and not (control and key == registry.dose_key)
        ]
        match = []
        for i, r in enumerate(self.rows):
            if len(r) != len(want):
                continue
            if any(v is not None and v != w for v, w in zip(want, r, strict=True)):
                continue
            if all(np.isclose(values[j], self.values[i, j]) for j in given):
                match.append(i)
        if not match:
            return None
        weights = self.n_cells[match].astype(np.float64)
        levels = self.levels[match].astype(np.float64)
        return (weights[:, None] * levels).sum(0) / weights.sum()

    def residual(
        self, row: tuple, values: np.ndarray, source: np.ndarray | None = None
    ) -> np.ndarray | None:
        """The residual of categorical condition ``row`` at continuous ``values`` (order of
        ``keys``), see :meth:`combination`; None without one."""
        found = self.combination(row, values, source)
        return None if found is None else self._apply(found, self.residuals)

    def combination(
        self, row: tuple, values: np.ndarray, source: np.ndarray | None = None
    ) -> Combination | None:
        """The anchors (index -> weight) of categorical condition ``row`` at continuous
        ``values``: measured, interpolated along one continuous covariate (the others as
        measured), or the nearest measured value outside the range; None without one.
        ``source``: the continuous values of a transport's source (None: the context's
        control)."""
        found = self._by_row.get(tuple(row))
        if not found:
            return None
        idx = np.asarray(found)
        if source is None:
            source = np.full(len(self.keys), np.nan)
        idx = idx[_same(self.sources[idx], np.asarray(source, dtype=np.float64)).all(axis=1)]
        if not len(idx):
            return None
        grid = self.values[idx]
        same = _same(grid, values)
        exact = same.all(axis=1)
        if exact.any():
            return {int(idx[np.flatnonzero(exact)[0]]): 1.0}
        for j in range(len(self.keys)):
            others = np.delete(same, j, axis=1).all(axis=1)
            x = values[j]
            cand = idx[others & np.isfinite(grid[:, j])]
            if len(cand) and np.isfinite(x):
                return self._along(cand, j, x)  # None at dose 0: the control
            unset = idx[others & np.isnan(grid[:, j])]
            if len(unset):  # measured without that covariate (e.g. a knock-out's dose)
                return {int(unset[0]): 1.0}
        return None

    def _along(self, cand: np.ndarray, j: int, x: float) -> Combination | None:
        v = self.values[cand, j]
        order = np.argsort(v)
        cand, v = cand[order], v[order]
        use_log = self.log[j] and (v > 0).all() and x > 0
        if self.log[j] and x <= 0:  # a dosed perturbation at dose 0 is the control
            return None
        t, grid = (np.log(x), np.log(v)) if use_log else (x, v)
        if t <= grid[0] or len(grid) == 1:
            return {int(cand[0]): 1.0}
        if t >= grid[-1]:
            return {int(cand[-1]): 1.0}
        hi = int(np.searchsorted(grid, t))
        w = float((t - grid[hi - 1]) / (grid[hi] - grid[hi - 1]))
        return {int(cand[hi - 1]): 1 - w, int(cand[hi]): w}

    @staticmethod
    def _apply(combination: Combination, array: np.ndarray) -> np.ndarray:
        return sum(w * array[i] for i, w in combination.items()).astype(np.float32)

    def shifts(
        self,
        registry: CovariateRegistry,
        obs_src: pd.DataFrame,
        obs_tgt: pd.DataFrame,
        *,
        interaction: np.ndarray | None = None,
        contexts: list[tuple] | None = None,
        context_weights: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each predicted cell's correction and the mean of the prediction it corrects
        (``(n_cells, n_genes)`` each, log expression, see :func:`anchor_cells`) and which
        cells have one, for cells predicted from ``obs_src`` to ``obs_tgt`` (see the module
        doc). ``interaction``: cells whose interaction is taken from ``contexts`` with
        ``context_weights`` (``(n_cells, len(contexts))``)."""
        n = len(obs_tgt)
        pkey, control = registry.perturbation_key, registry.control
        if len(self) and (pkey is None or control is None):
            return self._transports(registry, obs_src, obs_tgt)
        if not len(self) or pkey is None or pkey not in obs_tgt or pkey not in obs_src:
            return self._corrections(n, lambda i: None)
        ip = conditions.perturbation_index(registry)
        src = conditions.condition_rows(registry, obs_src)
        tgt = conditions.condition_rows(registry, obs_tgt)
        conts = continuous_values(obs_tgt, self.keys)
        cov = registry[pkey]

        def lookup(i: int):
            s, t = src[i], tgt[i]
            if not t or None in t or s[ip] != control or context_of(s, ip) != context_of(t, ip):
                return None
            inter = None
            if interaction is not None and interaction[i] and contexts is not None:
                inter = tuple(float(w) for w in context_weights[i])
            key = (t, conts[i].tobytes(), inter)
            return key, lambda: self._cell(t, conts[i], ip, cov, control, contexts, inter)

        return self._corrections(n, lookup)

    def _transports(self, registry, obs_src, obs_tgt) -> tuple:
        """:meth:`shifts` of a time course: a cell whose source is a measured condition
        takes the residuals of the transports from it, at its target's values."""
        src = conditions.condition_rows(registry, obs_src)
        tgt = conditions.condition_rows(registry, obs_tgt)
        has_cats = any(c.categorical for c in registry.covariates)
        before, after = continuous_values(obs_src, self.keys), continuous_values(obs_tgt, self.keys)

        def lookup(i: int):
            s, t = src[i], tgt[i]
            if s != t or None in t or (has_cats and not t):
                return None
            key = (t, before[i].tobytes(), after[i].tobytes())
            return key, lambda: self.combination(t, after[i], before[i])

        return self._corrections(len(obs_tgt), lookup)

    def _corrections(self, n: int, lookup) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(shift, reference, where)`` of ``n`` cells: ``lookup(i)`` gives a cell's cache key
        and how to find its anchors (a :data:`Combination` or None), or None for no anchor;
        cells of the same key share one lookup."""
        n_genes = self.residuals.shape[1]
        shift = np.zeros((n, n_genes), dtype=np.float32)
        reference = np.zeros((n, n_genes), dtype=np.float32)
        where = np.zeros(n, dtype=bool)
        cache: dict = {}
        for i in range(n):
            found = lookup(i)
            if found is None:
                continue
            key, find = found
            if key not in cache:
                combination = find()
                cache[key] = None if combination is None else (
                    self._apply(combination, self.residuals), self._apply(combination, self.means)
                )  # fmt: skip
            if cache[key] is not None:
                shift[i], reference[i] = cache[key]
                where[i] = True
        return shift, reference, where

    def _cell(self, row, values, ip, cov, control, contexts, weights) -> Combination | None:
        def at(ctx: tuple, p: str) -> Combination | None:
            return self.combination((*ctx[:ip], p, *ctx[ip:]), values)

        ctx = context_of(row, ip)
        own = at(ctx, row[ip])
        dosed = [v for v, log in zip(values, self.log, strict=True) if log and np.isfinite(v)]
        if own is None and dosed and min(dosed) <= 0 and tuple(row) in self._by_row:
            return at(ctx, control)  # measured at doses above 0 only: at dose 0, the control
        if own is not None and weights is None:
            return own
        parts = cov.parts(row[ip])
        if len(parts) < 2:
            return None
        composed = _composed(at, ctx, parts, control)
        if composed is None:
            return None
        for c, w in zip(contexts or (), weights or (), strict=False):
            if w <= 0:
                continue
            pair, there = at(c, row[ip]), _composed(at, c, parts, control)
            if pair is None or there is None:
                return composed  # no interaction residual to add: the parts' alone
            composed = _add(composed, _add(pair, there, -1.0), w)
        return composed


def anchor_cells(
    x: np.ndarray, shift: np.ndarray, reference: np.ndarray, where: np.ndarray
) -> np.ndarray:
    """Correct cells by their ``shift`` so that a population whose mean is ``reference``
    moves by exactly the shift while values stay non-negative: a gene raised is shifted, a
    gene lowered is scaled towards 0 by ``max(0, 1 + shift / reference)`` (to 0 at most), so
    no clipping raises its mean. Cell by cell: the same cells give the same values however
    they are split into calls (chunks).

    Parameters
    ----------
    x
        Non-negative cells ``(n, genes)`` (log expression).
    shift, reference
        ``(n, genes)``: each cell's correction, and the model's mean prediction of its
        condition that the correction was measured against.
    where
        Cells to correct (others are left as they are).

    Returns
    -------
    ndarray
        A new array of ``x``'s shape and dtype.
    """
    out = np.array(x, copy=True)
    rows = np.flatnonzero(where)
    if not len(rows):
        return out
    v, s = out[rows].astype(np.float64), shift[rows].astype(np.float64)
    ref = reference[rows].astype(np.float64)
    scale = np.maximum(0.0, 1.0 + s / np.where(ref > 0, ref, 1.0))
    lowered = np.where(ref > 0, v * scale, np.maximum(v + s, 0.0))
    out[rows] = np.where(s >= 0, v + s, lowered)
    return out


def _rows_by(codes: np.ndarray) -> dict[int, np.ndarray]:
    """``{code: rows}`` of the codes >= 0 (rows ascending)."""
    if not len(codes):
        return {}
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    ends = np.r_[starts[1:], len(codes)]
    return {
        int(sorted_codes[a]): order[a:b]
        for a, b in zip(starts, ends, strict=True)
        if sorted_codes[a] >= 0
    }


def continuous_values(obs: pd.DataFrame, keys: tuple[str, ...] | list[str]) -> np.ndarray:
    """``(len(obs), len(keys))`` values of continuous covariates (NaN: unset or absent)."""
    out = np.full((len(obs), len(keys)), np.nan)
    for j, key in enumerate(keys):
        if key in obs:
            out[:, j] = pd.to_numeric(obs[key], errors="coerce").to_numpy(np.float64)
    return out


def _composed(at, ctx: tuple, parts: list[str], control: str) -> Combination | None:
    """sum_j r(ctx, p_j) - (k - 1) r(ctx, control) as a combination of anchors, or None when
    one is missing (each part's residual holds the reconstruction's once)."""
    found = [at(ctx, p) for p in parts]
    base = at(ctx, control)
    if base is None or any(r is None for r in found):
        return None
    out: Combination = {}
    for r in found:
        out = _add(out, r)
    return _add(out, base, -(len(parts) - 1.0))


def _add(a: Combination, b: Combination, weight: float = 1.0) -> Combination:
    """a + weight * b."""
    out = dict(a)
    for i, w in b.items():
        out[i] = out.get(i, 0.0) + weight * w
    return out


def _same(grid: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Elementwise: equal values, or both unset."""
    both_nan = np.isnan(grid) & np.isnan(values)[None, :]
    close = np.isclose(grid, values[None, :], rtol=1e-6, atol=1e-9)
    return both_nan | close
