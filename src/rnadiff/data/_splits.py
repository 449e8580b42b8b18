"""Benchmark splits of the real data sets: which cells train, which are predicted, from what.

A :class:`Split` is one training set with one or more :class:`Evaluation` targets; every split
is seeded and built from the raw AnnData only (no preprocessing here: each method preprocesses
its own training cells, so nothing leaks from held-out cells).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd


@dataclass
class Evaluation:
    """One predicted population and the real cells it is scored against."""

    name: str  # e.g. the held-out cell type or knock-out
    source: ad.AnnData  # cells mapped to the target (counterfactual input)
    real: ad.AnnData  # real cells of the target condition
    control: ad.AnnData  # real reference cells the change is measured from
    target: dict  # covariates set on the source cells, e.g. {"group_id": "stim"}
    condition: dict  # the full condition for generation, e.g. target + cell type


@dataclass
class Split:
    """Training cells, how to register them, and what to predict."""

    task: str
    fold: str
    seed: int
    train: ad.AnnData
    setup: dict  # keyword arguments of RNADiffusion.setup_anndata
    evaluations: list[Evaluation] = field(default_factory=list)


def _mask(adata: ad.AnnData, **values) -> np.ndarray:
    keep = np.ones(adata.n_obs, dtype=bool)
    for key, value in values.items():
        keep &= (adata.obs[key].astype(str) == str(value)).to_numpy()
    return keep


def kang_loo_celltype(adata: ad.AnnData, *, seed: int = 0) -> Iterator[Split]:
    """Kang 2018: hold out the stimulated cells of each cell type in turn (5 folds).

    The held-out type's control cells stay in training (as in scGen and CPA) and are the
    source of its prediction; the seed only changes the methods' randomness.
    """
    setup = {"perturbation_key": "group_id", "control": "ctrl", "cell_type_key": "cluster_id"}
    for cell_type in sorted(set(adata.obs["cluster_id"])):
        held = _mask(adata, cluster_id=cell_type, group_id="stim")
        source = adata[_mask(adata, cluster_id=cell_type, group_id="ctrl")]
        evaluation = Evaluation(
            name=cell_type,
            source=source,
            real=adata[held],
            control=source,
            target={"group_id": "stim"},
            condition={"group_id": "stim", "cluster_id": cell_type},
        )
        yield Split("kang_loo_celltype", cell_type, seed, adata[~held], setup, [evaluation])


def papalexi_clean(adata: ad.AnnData, *, min_frac: float = 0.8) -> ad.AnnData:
    """Papalexi 2021 cells with a confident guide assignment (``top_grna_frac > min_frac``)."""
    return adata[(adata.obs["top_grna_frac"] > min_frac).to_numpy()]


def papalexi_seen(
    adata: ad.AnnData, *, seed: int = 0, test_fraction: float = 0.2
) -> Iterator[Split]:
    """Papalexi 2021: hold out a random ``test_fraction`` of every knock-out's cells.

    The model trains on the rest of every knock-out and of the non-targeting cells; each
    knock-out's held-out cells are predicted from the held-out non-targeting cells.
    """
    key, control = "top_grna_target", "non-targeting"
    setup = {"perturbation_key": key, "control": control, "batch_key": "bio_rep"}
    rng = np.random.default_rng(seed)
    test = np.zeros(adata.n_obs, dtype=bool)
    for _, idx in adata.obs.groupby(key, observed=True).indices.items():
        n_test = max(1, round(len(idx) * test_fraction))
        test[rng.choice(idx, size=n_test, replace=False)] = True
    held_control = adata[test & _mask(adata, **{key: control})]
    split = Split("papalexi_seen", f"seed{seed}", seed, adata[~test], setup)
    for target in sorted(set(adata.obs[key]) - {control}):
        split.evaluations.append(
            Evaluation(
                name=target,
                source=held_control,
                real=adata[test & _mask(adata, **{key: target})],
                control=held_control,
                target={key: target},
                condition={key: target},
            )
        )
    yield split


def papalexi_largest_effects(adata: ad.AnnData, n: int = 5) -> list[str]:
    """The ``n`` knock-outs whose mean log-expression differs most from non-targeting (L2)."""
    x = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    size = x.sum(axis=1, keepdims=True)
    logx = np.log1p(x / np.maximum(size, 1) * 1e4)
    groups = adata.obs["top_grna_target"].astype(str).to_numpy()
    ref = logx[groups == "non-targeting"].mean(axis=0)
    effects = {
        g: float(np.linalg.norm(logx[groups == g].mean(axis=0) - ref))
        for g in set(groups) - {"non-targeting"}
    }
    return sorted(effects, key=effects.get, reverse=True)[:n]


def papalexi_unseen(adata: ad.AnnData, *, seed: int = 0, n: int = 5) -> Iterator[Split]:
    """Papalexi 2021: leave each of the ``n`` strongest knock-outs out of training entirely."""
    key, control = "top_grna_target", "non-targeting"
    setup = {"perturbation_key": key, "control": control, "batch_key": "bio_rep"}
    rng = np.random.default_rng(seed)
    ctrl_idx = np.flatnonzero(_mask(adata, **{key: control}))
    held_ctrl = np.zeros(adata.n_obs, dtype=bool)
    held_ctrl[rng.choice(ctrl_idx, size=len(ctrl_idx) // 5, replace=False)] = True
    for target in papalexi_largest_effects(adata, n):
        held = _mask(adata, **{key: target})
        source = adata[held_ctrl]
        evaluation = Evaluation(target, source, adata[held], source, {key: target}, {key: target})
        yield Split("papalexi_unseen", target, seed, adata[~held & ~held_ctrl], setup, [evaluation])


def hsmm_time(adata: ad.AnnData, *, seed: int = 0, held_out: float = 48) -> Iterator[Split]:
    """Trapnell 2014 myoblasts: hold out one time point, predict it from the one before.

    Time (hours) is a continuous covariate; the culture medium a categorical one.
    """
    hours = pd.to_numeric(adata.obs["Hours"]).to_numpy()
    points = sorted(set(hours))
    before = max(p for p in points if p < held_out)
    source = adata[hours == before]
    held = hours == held_out
    medium = str(adata.obs["Media"][held].iloc[0])
    evaluation = Evaluation(
        name=f"{held_out:g}h",
        source=source,
        real=adata[held],
        control=source,
        target={"Hours": held_out},
        condition={"Hours": held_out, "Media": medium},
    )
    setup = {"time_key": "Hours", "categorical_keys": ["Media"]}
    yield Split("hsmm_time", f"{held_out:g}h", seed, adata[~held], setup, [evaluation])


def kang9k_heldout(adata: ad.AnnData, *, seed: int = 0, fraction: float = 0.5) -> Iterator[Split]:
    """Kang 2018, 9,015 genes: hold out ``fraction`` of the stimulated and of the control
    cells (seeded); the held-out stimulated cells are predicted from the held-out controls.

    The file has no cell-type labels: the perturbation is seen in training, and the task tests
    a realistic gene space (which genes are modelled, every gene scored).
    """
    key, control = "group_id", "ctrl"
    rng = np.random.default_rng(seed)
    test = np.zeros(adata.n_obs, dtype=bool)
    for _, idx in adata.obs.groupby(key, observed=True).indices.items():
        test[rng.choice(idx, size=round(len(idx) * fraction), replace=False)] = True
    source = adata[test & _mask(adata, **{key: control})]
    evaluation = Evaluation(
        name="stim",
        source=source,
        real=adata[test & _mask(adata, **{key: "stim"})],
        control=source,
        target={key: "stim"},
        condition={key: "stim"},
    )
    setup = {"perturbation_key": key, "control": control}
    yield Split("kang9k_heldout", f"seed{seed}", seed, adata[~test], setup, [evaluation])
