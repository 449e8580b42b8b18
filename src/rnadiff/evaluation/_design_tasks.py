"""Benchmark tasks of inverse design and perturbation ranking, on a model trained on a split.

Each function takes a benchmark split, its shared preprocessing and an rnadiff model trained
on the split's training cells, and returns tidy rows ``task, fold, seed, evaluation, method,
metric, value`` like :func:`rnadiff.evaluation._benchmark.score_split`.

* ``papalexi_rank``: each knock-out's held-out cells are the target; all perturbations the
  model knows are ranked; top-1/top-5 accuracy and MRR of the true knock-out, for rnadiff's
  combined, likelihood and generation scores, the nearest training pseudobulk change by
  cosine similarity, and a random ranking (expected values).
* ``papalexi_marker_rank``: "interferon-gamma response genes down" (the genes most decreased
  in knock-out vs non-targeting training cells); ranks of IFNGR1, IFNGR2, JAK2, STAT1, IRF1.
* ``kang_design``: stimulated-like cells of the held-out cell type designed from markers
  alone, against unguided control samples: success rate, realism, E-distance and Pearson
  delta to the real stimulated cells of that type.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from rnadiff.data._splits import Split
from rnadiff.design import Markers, random_ranking_metrics, ranking_metrics
from rnadiff.design._ranking import cosine
from rnadiff.design._realism import nearest_neighbor_ratio
from rnadiff.evaluation._metrics import response_metrics, wilcoxon_scores
from rnadiff.model import RNADiffusion

logger = logging.getLogger("rnadiff")

IFNG_PATHWAY = ("IFNGR1", "IFNGR2", "JAK2", "STAT1", "IRF1")
KANG_MARKERS = ("ISG15", "IFIT1", "IFI6")


def _row(task, split, evaluation, method, metric, value) -> dict:
    return {
        "task": task,
        "fold": split.fold,
        "seed": split.seed,
        "evaluation": evaluation,
        "method": method,
        "metric": metric,
        "value": float(value),
    }


def _model_order(prep, model: RNADiffusion) -> np.ndarray:
    """Columns of the shared preprocessing's populations in the model's gene order."""
    return pd.Index(prep.genes).get_indexer(model.genes)


def _means(prep, obs: pd.DataFrame, key: str) -> dict[str, np.ndarray]:
    labels = obs[key].astype(str).to_numpy()
    return {g: prep.train[labels == g].mean(axis=0) for g in np.unique(labels)}


def papalexi_rank_rows(
    split: Split,
    prep,
    model: RNADiffusion,
    *,
    n_cells: int = 200,
    max_target_cells: int = 400,
    n_noise_levels: int = 12,
    n_draws: int = 2,
):
    """Rank all perturbations for each knock-out's held-out cells (see the module doc);
    the settings are :meth:`rnadiff.RNADiffusion.rank_perturbations`' defaults."""
    key, control = split.setup["perturbation_key"], split.setup["control"]
    means = _means(prep, split.train.obs, key)
    candidates = sorted(means)
    rows, task = [], "papalexi_rank"
    for ev in split.evaluations:  # the candidates' cells are decoded once (the engine keeps them)
        true = str(ev.target[key])
        ranked = model.rank_perturbations(
            ev.real,
            reference=ev.control,
            n_cells=n_cells,
            max_target_cells=max_target_cells,
            n_noise_levels=n_noise_levels,
            n_draws=n_draws,
            seed=split.seed,
            progress=False,
        )
        at = ranked.set_index("perturbation")
        ranks = {
            "rnadiff (combined)": int(at.loc[true, "rank"]),
            "rnadiff (likelihood)": int(at.loc[true, "rank_likelihood_score"]),
            "rnadiff (generation)": int(at.loc[true, "rank_phenotype_score"]),
        }
        pops = prep.evaluations[ev.name]
        change = pops["real"].mean(axis=0) - pops["control"].mean(axis=0)
        cos = pd.Series({c: cosine(means[c] - means[control], change) for c in candidates})
        ranks["baseline: pseudobulk cosine"] = int(cos.rank(ascending=False, method="min")[true])
        for method, r in ranks.items():
            rows += [_row(task, split, true, method, m, v) for m, v in ranking_metrics([r]).items()]
            rows.append(_row(task, split, true, method, "rank", r))
        for m, v in random_ranking_metrics(len(candidates)).items():
            rows.append(_row(task, split, true, "baseline: random", m, v))
    return rows


def ifng_down_genes(split: Split, prep, n: int = 10) -> list[str]:
    """Genes most decreased in knock-out vs non-targeting training cells (Wilcoxon)."""
    key, control = split.setup["perturbation_key"], split.setup["control"]
    is_ctrl = (split.train.obs[key].astype(str) == control).to_numpy()
    cols = prep.modelled  # markers must be genes the model models
    z = wilcoxon_scores(prep.train[~is_ctrl][:, cols], prep.train[is_ctrl][:, cols])
    order = np.argsort(z, kind="stable")[:n]
    return [prep.state.genes[i] for i in order if z[i] < 0]


def papalexi_marker_rows(
    split: Split,
    prep,
    model: RNADiffusion,
    *,
    n_genes: int = 10,
    n_cells: int = 200,
    expected: tuple[str, ...] = IFNG_PATHWAY,
):
    """Rank perturbations for "IFN-gamma response genes down"; ranks of the pathway KOs."""
    key = split.setup["perturbation_key"]
    genes = ifng_down_genes(split, prep, n_genes)
    held_ctrl = split.evaluations[0].control
    spec = Markers(down=tuple(genes), min_lfc=0.5)
    ranked = model.rank_perturbations(
        spec, reference=held_ctrl, n_cells=n_cells, seed=split.seed, progress=False
    )
    at = ranked.set_index("perturbation")
    # baseline: the knock-outs' real training cells scored by the same objective
    order = _model_order(prep, model)
    control = prep.evaluations[split.evaluations[0].name]["control"][:, order]
    bound = spec.bind(model.genes, reference=control)
    labels = split.train.obs[key].astype(str).to_numpy()
    train_log = prep.train[:, order]
    lookup = pd.Series({g: bound.values(train_log[labels == g]).mean() for g in np.unique(labels)})
    lookup_rank = lookup.rank(ascending=False, method="min")
    rows, task = [], "papalexi_marker_rank"
    logger.info("papalexi_marker_rank: IFN-gamma response genes (down): %s", genes)
    n = len(at)
    for ko in expected:
        if ko not in at.index:
            continue
        ranks = {
            "rnadiff (combined)": at.loc[ko, "rank"],
            "rnadiff (likelihood)": at.loc[ko, "rank_likelihood_score"],
            "rnadiff (generation)": at.loc[ko, "rank_phenotype_score"],
            "baseline: training cells": lookup_rank[ko],
        }
        for method, r in ranks.items():
            rows.append(_row(task, split, ko, method, "rank", r))
            rows.append(_row(task, split, ko, method, "top5", r <= 5))
        rows.append(_row(task, split, ko, "baseline: random", "rank", (n + 1) / 2))
        rows.append(_row(task, split, ko, "baseline: random", "top5", 5 / n))
    return rows


def kang_design_rows(
    split: Split, prep, model: RNADiffusion, *, n_cells: int = 300, markers=KANG_MARKERS
):
    """Design stimulated-like cells of the held-out type from markers alone (module doc)."""
    (ev,) = split.evaluations
    ct_key, pkey = split.setup["cell_type_key"], split.setup["perturbation_key"]
    cell_type = ev.condition[ct_key]
    genes = [g for g in markers if g in model.genes]
    if not genes:
        raise ValueError(f"none of the marker genes {list(markers)} is among the model's genes")
    pops = prep.evaluations[ev.name]
    spec = Markers(up=tuple(genes))
    designed = model.design(
        spec,
        conditions={ct_key: cell_type},
        n_cells=n_cells,
        reference=ev.control,
        seed=split.seed,
        progress=False,
    )[:, model.genes]
    unguided_ctrl = model.generate(
        {ct_key: cell_type, pkey: split.setup["control"]},
        n_cells=n_cells,
        seed=split.seed,
        progress=False,
    )[:, model.genes].X
    order = _model_order(prep, model)
    real, control = pops["real"][:, order], pops["control"][:, order]
    bound = spec.bind(model.genes, reference=control)
    train_log = prep.train[:, order]
    rows, task = [], "kang_design"
    populations = {
        "rnadiff design (markers)": np.asarray(designed.X),
        "rnadiff unguided control": np.asarray(unguided_ctrl),
        "real stimulated (reference)": real,
    }
    for method, x in populations.items():
        m = response_metrics(x, real, control, distributional=True, seed=split.seed)
        ratios, _ = nearest_neighbor_ratio(x, train_log, seed=split.seed)
        values = {
            "success_rate": bound.meets(x).mean(),
            "realism_ratio": np.median(ratios),
            "edistance": m["edistance"],
            "pearson_delta": m["pearson_delta_all"],
            "pearson_delta_top100": m["pearson_delta_top100"],
        }
        rows += [_row(task, split, cell_type, method, k, v) for k, v in values.items()]
    return rows
