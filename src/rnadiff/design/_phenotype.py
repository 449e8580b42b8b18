"""Phenotype specifications: what designed cells should look like, as differentiable objectives.

A specification (:class:`Markers`, :class:`Signature`, :class:`CellState`, or a weighted sum of
them) is bound to a model's genes with :meth:`bind`, which returns a :class:`BoundPhenotype`:

* ``objective(x)``: per-cell value to *increase*, on log-normalized expression (torch,
  differentiable).
  Every term is minus half the squared distance (in log-expression units) from the cell to the
  set of profiles that meet it, so a gradient step of size 1 in log space moves a profile onto
  that set (for one term); 0 means the term is met with its margin.
* ``distance(x)``: that distance, ``sqrt(-2 * objective)``, in log-expression units.
* ``meets(x)``: whether each cell meets every term (thresholds without the guidance margin).

Log-normalized expression is ``log1p`` of counts scaled to the model's ``target_sum`` (natural
logarithm); fold changes are given in log2 units as usual and converted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd
import torch

from rnadiff._errors import InputError

ToLog = Callable[[ad.AnnData], np.ndarray]  # cells -> log expression of the model's genes


class Phenotype:
    """Base of phenotype terms; supports ``w * term`` and ``term + term``."""

    def bind(
        self, genes: Sequence[str], *, reference: np.ndarray | None, to_log: ToLog
    ) -> BoundPhenotype:  # pragma: no cover - abstract
        raise NotImplementedError

    def terms(self) -> list[tuple[float, Phenotype]]:
        return [(1.0, self)]

    def __add__(self, other: Phenotype) -> Combined:
        if not isinstance(other, Phenotype):
            return NotImplemented
        return Combined(tuple(self.terms() + other.terms()))

    def __mul__(self, weight: float) -> Combined:
        return Combined(tuple((float(weight) * w, t) for w, t in self.terms()))

    __rmul__ = __mul__


@dataclass(frozen=True)
class BoundPhenotype:
    """A specification resolved against a model's genes (all arrays in the model's gene order)."""

    objective_fn: Callable[[torch.Tensor], torch.Tensor]
    meets_fn: Callable[[np.ndarray], np.ndarray]
    description: str
    parts: tuple[tuple[str, float, BoundPhenotype], ...] = ()

    def objective(self, x: torch.Tensor) -> torch.Tensor:
        """Per-cell objective (to increase) of log expression ``x`` (cells x model genes)."""
        return self.objective_fn(x)

    def values(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.objective_fn(torch.as_tensor(np.asarray(x, dtype=np.float32))).numpy()

    def distance(self, x: np.ndarray) -> np.ndarray:
        """Distance to the specification in log-expression units (0: met with margin)."""
        return np.sqrt(np.maximum(-2.0 * self.values(x), 0.0))

    def meets(self, x: np.ndarray) -> np.ndarray:
        """Boolean per cell: every term of the specification is met."""
        return np.asarray(self.meets_fn(np.asarray(x, dtype=np.float32)), dtype=bool)


def _gene_index(genes: Sequence[str], wanted: Iterable[str], what: str) -> np.ndarray:
    index = pd.Index(list(genes))
    wanted = list(wanted)
    missing = [g for g in wanted if g not in index]
    if missing:
        hint = ""
        lower = {g.lower(): g for g in index}
        close = [lower[m.lower()] for m in missing if m.lower() in lower]
        if close:
            hint = f" (did you mean {close[:5]}? gene names are case-sensitive)"
        raise InputError(
            f"{what}: {len(missing)} gene(s) not among the model's {len(index)} genes: "
            f"{missing[:10]}{hint}"
        )
    dup = pd.Index(wanted)[pd.Index(wanted).duplicated()].unique().tolist()
    if dup:
        raise InputError(f"{what}: genes given more than once: {dup[:10]}")
    return index.get_indexer(wanted)


def _reference(reference: np.ndarray | None, what: str) -> np.ndarray:
    if reference is None:
        raise InputError(f"{what} needs a reference population (cells x genes) to compare with")
    ref = np.asarray(reference, dtype=np.float64)
    if ref.ndim != 2 or ref.shape[0] < 2:
        raise InputError(f"{what}: the reference population needs at least 2 cells")
    return ref


@dataclass(frozen=True, eq=False)
class Markers(Phenotype):
    """Marker genes up and/or down relative to a reference population.

    Parameters
    ----------
    up, down
        Genes that must be higher / lower than in the reference.
    min_lfc
        Required log2 fold change of ``1 + expression`` over the reference's mean log
        expression: up genes need ``x >= mean + min_lfc * ln 2``, down genes
        ``x <= max(mean - min_lfc * ln 2, 0)`` (log1p scale; a gene cannot go below 0).
    percentile
        Instead of ``min_lfc``: up genes above this percentile of the reference cells, down
        genes below the ``100 - percentile`` percentile.
    margin
        Guidance aims this far (log units) beyond each threshold, so that cells clear it.
    tolerance
        Slack (log units) when checking down genes whose threshold is 0.
    reference
        Reference cells (AnnData); default: what the model decides (e.g. cells generated
        without guidance under the same condition).
    """

    up: tuple[str, ...] = ()
    down: tuple[str, ...] = ()
    min_lfc: float = 1.0
    percentile: float | None = None
    margin: float = 0.25
    tolerance: float = 0.05
    reference: ad.AnnData | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("up", "down"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            object.__setattr__(self, name, tuple(str(g).strip() for g in value if str(g).strip()))
        if not self.up and not self.down:
            raise InputError("Markers: give at least one gene in up or down")
        both = set(self.up) & set(self.down)
        if both:
            raise InputError(f"Markers: genes both up and down: {sorted(both)}")
        if self.percentile is not None and not 0 < self.percentile < 100:
            raise InputError(f"Markers: percentile must be in (0, 100), got {self.percentile}")
        if self.min_lfc < 0 or self.margin < 0 or self.tolerance < 0:
            raise InputError("Markers: min_lfc, margin and tolerance must be non-negative")

    def thresholds(self, ref: np.ndarray, up_idx: np.ndarray, down_idx: np.ndarray):
        if self.percentile is not None:
            up = np.percentile(ref[:, up_idx], self.percentile, axis=0)
            down = np.percentile(ref[:, down_idx], 100 - self.percentile, axis=0)
        else:
            delta = self.min_lfc * math.log(2)
            up = ref[:, up_idx].mean(axis=0) + delta
            down = np.maximum(ref[:, down_idx].mean(axis=0) - delta, 0.0)
        return up, down

    def bind(self, genes, *, reference=None, to_log=None) -> BoundPhenotype:
        up_idx = _gene_index(genes, self.up, "Markers up")
        down_idx = _gene_index(genes, self.down, "Markers down")
        if self.reference is not None:
            if to_log is None:
                raise InputError("Markers: cannot read the reference without the model")
            reference = to_log(self.reference)
        ref = _reference(reference, "Markers")
        up_thr, down_thr = self.thresholds(ref, up_idx, down_idx)
        up_t = torch.as_tensor(up_thr + self.margin, dtype=torch.float32)
        down_t = torch.as_tensor(down_thr - self.margin, dtype=torch.float32)
        up_i, down_i = torch.as_tensor(up_idx), torch.as_tensor(down_idx)

        def objective(x: torch.Tensor) -> torch.Tensor:
            short_up = torch.relu(up_t - x[:, up_i]).pow(2).sum(dim=1)
            short_down = torch.relu(x[:, down_i] - down_t).pow(2).sum(dim=1)
            return -0.5 * (short_up + short_down)

        def meets(x: np.ndarray) -> np.ndarray:
            ok_up = (x[:, up_idx] >= up_thr).all(axis=1)
            limit = np.where(down_thr > 0, down_thr, down_thr + self.tolerance)
            ok_down = (x[:, down_idx] <= limit).all(axis=1)
            return ok_up & ok_down

        rule = f"above p{self.percentile:g}" if self.percentile else f"log2FC >= {self.min_lfc:g}"
        desc = f"markers up {list(self.up)} / down {list(self.down)} ({rule} vs reference)"
        return BoundPhenotype(objective, meets, desc)


@dataclass(frozen=True, eq=False)
class Signature(Phenotype):
    """A target expression signature: a vector over genes, or the mean of target cells.

    Parameters
    ----------
    target
        Log-normalized target values as a ``pandas.Series`` or mapping ``gene -> value``
        (any subset of the model's genes), or an AnnData of target cells (their mean over
        the model's genes is the target).
    tolerance
        A cell meets the signature if the root-mean-square difference to the target over its
        genes is at most this (log units). Default for target cells: the 90th percentile of
        the target cells' own RMS distance to their mean; required for a vector.
    """

    target: pd.Series | Mapping[str, float] | ad.AnnData = field(repr=False)
    tolerance: float | None = None

    def bind(self, genes, *, reference=None, to_log=None) -> BoundPhenotype:
        tolerance = self.tolerance
        if isinstance(self.target, ad.AnnData):
            if to_log is None:
                raise InputError("Signature: cannot read target cells without the model")
            cells = to_log(self.target)
            if cells.shape[0] < 2:
                raise InputError("Signature: give at least 2 target cells")
            idx = np.arange(len(genes))
            values = cells.mean(axis=0)
            if tolerance is None:
                rms = np.sqrt(((cells - values) ** 2).mean(axis=1))
                tolerance = float(np.percentile(rms, 90))
        else:
            series = pd.Series(dict(self.target), dtype=float)
            if series.empty:
                raise InputError("Signature: the target is empty")
            if not np.isfinite(series.to_numpy()).all():
                raise InputError("Signature: the target holds NaN or infinite values")
            idx = _gene_index(genes, series.index, "Signature")
            values = series.to_numpy()
            if tolerance is None:
                raise InputError("Signature: give a tolerance (RMS, log units) for a target vector")
        target = torch.as_tensor(values, dtype=torch.float32)
        idx_t, n = torch.as_tensor(idx), len(idx)

        def objective(x: torch.Tensor) -> torch.Tensor:
            # minus half the squared distance over the signature's genes: a unit step lands
            # on the target (the check below uses the RMS difference, comparable across sizes)
            return -0.5 * (x[:, idx_t] - target).pow(2).sum(dim=1)

        def meets(x: np.ndarray) -> np.ndarray:
            return np.sqrt(((x[:, idx] - values) ** 2).mean(axis=1)) <= tolerance

        return BoundPhenotype(
            objective, meets, f"signature over {n} genes (RMS <= {tolerance:.3g})"
        )


@dataclass(frozen=True, eq=False)
class CellState(Phenotype):
    """A target cell state defined by a classifier trained on real labelled cells.

    A logistic regression (state vs the other labels, L2-penalized, on the model's genes) is
    fitted when the specification is bound; a cell meets the state if its predicted
    probability is at least ``min_prob``.

    Parameters
    ----------
    cells
        Real labelled cells (AnnData with the model's genes).
    label_key
        ``obs`` column of the labels.
    state
        The label of the target state.
    min_prob
        Probability a cell needs to count as in the state.
    target_prob
        Guidance aims at this probability (above ``min_prob``, the margin).
    l2
        Strength of the L2 penalty.
    """

    cells: ad.AnnData = field(repr=False)
    label_key: str = ""
    state: str = ""
    min_prob: float = 0.5
    target_prob: float = 0.9
    l2: float = 1e-2

    def bind(self, genes, *, reference=None, to_log=None) -> BoundPhenotype:
        if self.label_key not in self.cells.obs:
            raise InputError(
                f"CellState: column {self.label_key!r} not in the labelled cells' obs; "
                f"available: {list(self.cells.obs.columns)}"
            )
        labels = self.cells.obs[self.label_key].astype(str).to_numpy()
        if self.state not in set(labels):
            raise InputError(
                f"CellState: state {self.state!r} not among the labels {sorted(set(labels))}"
            )
        y = labels == self.state
        if y.all():
            raise InputError("CellState: every labelled cell is in the state; give other cells too")
        if not 0 < self.min_prob < self.target_prob < 1:
            raise InputError("CellState: need 0 < min_prob < target_prob < 1")
        if to_log is None:
            raise InputError("CellState: cannot read the labelled cells without the model")
        w, b = fit_logistic(to_log(self.cells), y, l2=self.l2)
        w_t, b_f = torch.as_tensor(w, dtype=torch.float32), float(b)
        target_logit = math.log(self.target_prob / (1 - self.target_prob))
        min_logit = math.log(self.min_prob / (1 - self.min_prob))
        norm2 = float((w**2).sum()) or 1.0

        def objective(x: torch.Tensor) -> torch.Tensor:
            # squared distance to the half-space {logit >= target_logit}
            return -0.5 * torch.relu(target_logit - (x @ w_t + b_f)).pow(2) / norm2

        def meets(x: np.ndarray) -> np.ndarray:
            return x @ w + b >= min_logit

        return BoundPhenotype(
            objective, meets, f"cell state {self.label_key}={self.state} (p >= {self.min_prob})"
        )


def fit_logistic(
    x: np.ndarray, y: np.ndarray, *, l2: float = 1e-2, max_iter: int = 200
) -> tuple[np.ndarray, float]:
    """L2-penalized logistic regression by L-BFGS; returns weights and bias on ``x``'s scale.

    Features are standardized for the fit (so the penalty treats genes alike) and the
    coefficients mapped back, so ``x @ w + b`` is the logit of the positive class.
    """
    x = np.asarray(x, dtype=np.float64)
    mu, sd = x.mean(axis=0), x.std(axis=0)
    sd = np.where(sd > 1e-6, sd, 1.0)
    xt = torch.as_tensor((x - mu) / sd)
    yt = torch.as_tensor(np.asarray(y, dtype=np.float64))
    pos = float(yt.mean())
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([math.log(pos / (1 - pos))], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")
    # balanced classes: each class weighs half
    weight = torch.where(yt > 0, 0.5 / pos, 0.5 / (1 - pos))

    def closure():
        opt.zero_grad()
        logits = xt @ w + b
        loss = (
            torch.nn.functional.binary_cross_entropy_with_logits(logits, yt, weight=weight)
            + l2 * w.pow(2).sum() / 2
        )
        loss.backward()
        return loss

    opt.step(closure)
    w_np = w.detach().numpy() / sd
    return w_np, float(b.detach().numpy()[0] - (w_np * mu).sum())


@dataclass(frozen=True, eq=False)
class Combined(Phenotype):
    """A weighted sum of terms: objective ``sum_i w_i f_i``; met when every term is met."""

    parts: tuple[tuple[float, Phenotype], ...]

    def __post_init__(self) -> None:
        if not self.parts:
            raise InputError("the phenotype specification is empty")
        for w, _ in self.parts:
            if not np.isfinite(w) or w <= 0:
                raise InputError(f"phenotype weights must be positive, got {w}")

    def terms(self) -> list[tuple[float, Phenotype]]:
        return list(self.parts)

    def bind(self, genes, *, reference=None, to_log=None) -> BoundPhenotype:
        bound = [(w, t.bind(genes, reference=reference, to_log=to_log)) for w, t in self.parts]
        total = sum(w for w, _ in bound)

        def objective(x: torch.Tensor) -> torch.Tensor:
            return sum(w * b.objective(x) for w, b in bound) / total

        def meets(x: np.ndarray) -> np.ndarray:
            return np.logical_and.reduce([b.meets(x) for _, b in bound])

        desc = " + ".join(f"{w:g} x {b.description}" for w, b in bound)
        parts = tuple((b.description, w, b) for w, b in bound)
        return BoundPhenotype(objective, meets, desc, parts)


def as_phenotype(spec: Phenotype | Sequence[Phenotype]) -> Phenotype:
    """A phenotype from one term or a list of terms (equal weights)."""
    if isinstance(spec, Phenotype):
        return spec
    terms = list(spec or [])
    if not terms:
        raise InputError("the phenotype specification is empty")
    if not all(isinstance(t, Phenotype) for t in terms):
        raise InputError("a phenotype is built from Markers, Signature and CellState terms")
    return Combined(tuple((1.0, t) for t in terms))
