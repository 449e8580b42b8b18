"""Baselines that return populations of cells, so that every metric applies to them."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Literal

import numpy as np


def control_baseline(source: np.ndarray) -> np.ndarray:
    """Predict no change: the source (control) cells as they are."""
    return np.array(source, dtype=np.float32, copy=True)


def additive_baseline(source: np.ndarray, shifts: Sequence[np.ndarray]) -> np.ndarray:
    """Source cells plus the mean perturbation shift seen in other contexts.

    Parameters
    ----------
    source
        Control cells of the target context (log-normalized).
    shifts
        Per other context, ``mean(perturbed) - mean(control)`` of the log values; averaged with
        equal weight per context. Values are clipped at 0 (log1p of a non-negative value).
        For a combination never seen as such, pass the summed shifts of its parts,
        ``[combination_shift([shift_a, shift_b])]``.
    """
    if not len(shifts):
        raise ValueError("the additive baseline needs at least one context with both conditions")
    shift = np.mean(np.stack(shifts), axis=0)
    return np.clip(np.asarray(source, dtype=np.float32) + shift, 0, None).astype(np.float32)


# how "nearest" is measured between control profiles: "sqeuclidean" is rnadiff's own (the
# squared distance :func:`rnadiff.conditioning.nearest_context_weights` uses for ``compose``,
# on profiles in the model's scaled space); "correlation" ranks by Pearson correlation
NearestBy = Literal["sqeuclidean", "correlation"]


def nearest_contexts(
    profile: np.ndarray,
    candidates: Mapping[Hashable, np.ndarray],
    *,
    by: NearestBy = "sqeuclidean",
) -> list[Hashable]:
    """The candidate contexts whose control profile is nearest to ``profile`` (ties: all).

    Parameters
    ----------
    profile
        Mean control profile of the target context ``(n_genes,)``.
    candidates
        Mean control profile per candidate context.
    by
        ``"sqeuclidean"``: smallest squared Euclidean distance (rnadiff's ``compose``
        transfer, :func:`rnadiff.conditioning.nearest_context_weights`); ``"correlation"``:
        largest Pearson correlation.

    Returns
    -------
    list
        The nearest contexts, in the order of ``candidates``.
    """
    if not candidates:
        raise ValueError("no candidate context")
    if by not in ("sqeuclidean", "correlation"):
        raise ValueError(f"by must be 'sqeuclidean' or 'correlation', got {by!r}")
    target = np.asarray(profile, dtype=np.float64)
    names = list(candidates)
    profiles = np.stack([np.asarray(candidates[c], dtype=np.float64) for c in names])
    if profiles.shape[1:] != target.shape:
        raise ValueError(f"profiles of shape {profiles.shape[1:]}, target {target.shape}")
    if by == "sqeuclidean":
        score = ((profiles - target) ** 2).sum(axis=1)  # smaller is nearer
    else:
        score = -np.array([_pearson(p, target) for p in profiles])
    return [c for c, s in zip(names, score, strict=True) if s <= score.min()]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def nearest_context_additive_baseline(
    source: np.ndarray,
    shifts: Mapping[Hashable, np.ndarray],
    control_profiles: Mapping[Hashable, np.ndarray],
    *,
    profile: np.ndarray | None = None,
    by: NearestBy = "sqeuclidean",
) -> np.ndarray:
    """Source cells plus the perturbation shift of the one training context nearest to theirs.

    The baseline matching rnadiff's ``compose`` transfer (the control of the target context
    plus the perturbation's effect in the nearest context where it was measured): where
    :func:`additive_baseline` averages the shift over every training context, this takes the
    shift ``mean(perturbed) - mean(control)`` of the context whose mean control profile is
    nearest to the target context's (ties: the tied contexts' shifts averaged, as rnadiff
    shares the weight). A context where the perturbation was measured is its own nearest.

    Parameters
    ----------
    source
        Control cells of the target context (log-normalized).
    shifts
        Per training context with both conditions, its shift (log values).
    control_profiles
        Per context of ``shifts``, the profile compared: its mean control cells, in the space
        the distance is meant in (rnadiff's: the model's scaled genes).
    profile
        The target context's profile in the same space; default: the mean of ``source`` (then
        ``source`` must be in that space too).
    by
        How "nearest" is measured (:func:`nearest_contexts`).

    Returns
    -------
    numpy.ndarray
        float32 cells, the shape of ``source``, clipped at 0.
    """
    missing = set(shifts) - set(control_profiles)
    if missing:
        raise ValueError(f"contexts without a control profile: {sorted(map(str, missing))}")
    if not shifts:
        raise ValueError("the nearest-context baseline needs a context with both conditions")
    target = np.asarray(source, dtype=np.float64).mean(axis=0) if profile is None else profile
    near = nearest_contexts(target, {c: control_profiles[c] for c in shifts}, by=by)
    return additive_baseline(source, [shifts[c] for c in near])


def combination_shift(parts_shifts: Sequence[np.ndarray]) -> np.ndarray:
    """Shift of a combined perturbation as the sum of its parts' shifts (log scale).

    The additive model of combinatorial effects (Norman et al. 2019, Science; the "additive"
    baseline of Ahlmann-Eltze, Huber & Anders 2025, Nat. Methods): no interaction.
    """
    if not len(parts_shifts):
        raise ValueError("a combination needs at least one part")
    parts = [np.asarray(p, dtype=np.float64) for p in parts_shifts]
    if len({p.shape for p in parts}) > 1:
        raise ValueError(f"parts have different shapes: {[p.shape for p in parts]}")
    return np.sum(parts, axis=0)


def train_mean_baseline(
    perturbed_train_cells: np.ndarray | Sequence[np.ndarray], n_cells: int, *, seed: int = 0
) -> np.ndarray:
    """Ignore the context: a sample of the perturbed cells seen in training.

    Its gene means estimate the mean of all perturbed training cells (the "train mean"
    baseline of perturbation benchmarks), but as real-looking cells, so that population
    metrics apply to it too.

    Parameters
    ----------
    perturbed_train_cells
        Perturbed training cells (cells x genes), or one such matrix per training condition;
        with several, each condition gets equal weight whatever its number of cells.
    n_cells
        Cells to return.
    seed
        Seed of the sampling.

    Returns
    -------
    numpy.ndarray
        ``(n_cells, n_genes)`` float32 copies of training cells, in random order; drawn
        without replacement within a condition while it has enough cells, with replacement
        beyond.
    """
    groups = (
        [perturbed_train_cells]
        if isinstance(perturbed_train_cells, np.ndarray) and perturbed_train_cells.ndim == 2
        else list(perturbed_train_cells)
    )
    groups = [np.asarray(g, dtype=np.float32) for g in groups]
    if not groups or any(g.ndim != 2 or not len(g) for g in groups):
        raise ValueError("need at least one non-empty cells x genes matrix")
    if n_cells < 1:
        raise ValueError(f"n_cells must be >= 1, got {n_cells}")
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_cells, np.full(len(groups), 1 / len(groups)))
    picks = [
        g[rng.choice(len(g), size=c, replace=c > len(g))]
        for g, c in zip(groups, counts, strict=True)
    ]
    out = np.concatenate(picks)
    return out[rng.permutation(len(out))]


def linear_baseline(
    source: np.ndarray,
    train_pseudobulks: Mapping[tuple[str, str], np.ndarray],
    *,
    target: tuple[str, str],
    control: str,
    ridge: float = 0.1,
    sep: str = "+",
) -> np.ndarray:
    """Source cells shifted by the effect of a ridge regression on perturbation indicators.

    After the linear baselines of Ahlmann-Eltze, Huber & Anders 2025 (Nat. Methods 22:1657,
    "Deep-learning-based gene perturbation effect prediction does not yet outperform simple
    linear baselines"): each gene's pseudobulk mean is fitted as
    ``b + sum_{p in parts(perturbation)} beta_p + gamma_{cell type}`` over the training
    contexts (multi-hot over the parts of a combination ``"A+B"``; the control has no
    perturbation indicator), with ridge penalty ``ridge * |coefficients|^2`` on all but the
    intercept. The prediction for the target context minus that for the control of the same
    cell type is ``sum_p beta_p`` (the cell-type terms cancel: they are in the model so that
    cell types' baseline differences are not taken for perturbation effects); the source
    cells are shifted by it and clipped at 0.

    Parameters
    ----------
    source
        Control cells of the target cell type (log-normalized).
    train_pseudobulks
        Mean log expression per training context ``(perturbation, cell_type)``, control
        contexts included, equal weight each.
    target
        The held-out ``(perturbation, cell_type)``; must not be among the training contexts,
        and every part of its perturbation must occur in a training context.
    control
        Name of the control perturbation.
    ridge
        Penalty ``lambda`` (features are 0/1 indicators); 0 gives the minimum-norm least
        squares fit.
    sep
        Separator of the parts of a combination.

    Returns
    -------
    numpy.ndarray
        float32 cells, the shape of ``source``.
    """
    if target in train_pseudobulks:
        raise ValueError(f"the target context {target} is among the training pseudobulks")
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")

    def parts(perturbation: str) -> set[str]:
        return set() if perturbation == control else set(perturbation.split(sep))

    contexts = list(train_pseudobulks)
    perts = sorted(set().union(*(parts(p) for p, _ in contexts)))
    unseen = parts(target[0]) - set(perts)
    if unseen:
        raise ValueError(f"perturbations never seen in training: {sorted(unseen)}")
    cell_types = sorted({c for _, c in contexts})
    columns = {name: j for j, name in enumerate([*perts, *(("cell type", c) for c in cell_types)])}

    def encode(perturbation: str, cell_type: str) -> np.ndarray:
        x = np.zeros(len(columns))
        x[[columns[p] for p in parts(perturbation)]] = 1.0
        if ("cell type", cell_type) in columns:
            x[columns["cell type", cell_type]] = 1.0
        return x

    design = np.stack([encode(*ctx) for ctx in contexts])
    means = np.stack([np.asarray(train_pseudobulks[ctx], dtype=np.float64) for ctx in contexts])
    coef = _ridge(design, means, ridge)
    shift = (encode(*target) - encode(control, target[1])) @ coef
    return np.clip(np.asarray(source, dtype=np.float64) + shift, 0, None).astype(np.float32)


def _ridge(x: np.ndarray, y: np.ndarray, penalty: float) -> np.ndarray:
    """Coefficients of ``y ~ b + x @ coef`` with an unpenalized intercept ``b``."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    # the augmented least-squares form [x; sqrt(l) I] coef = [y; 0] also covers penalty 0
    a = np.vstack([xc, np.sqrt(penalty) * np.eye(x.shape[1])])
    b = np.vstack([yc, np.zeros((x.shape[1], y.shape[1]))])
    return np.linalg.lstsq(a, b, rcond=None)[0]
