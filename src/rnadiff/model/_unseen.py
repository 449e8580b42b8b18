"""Counterfactuals of drugs never measured: their mean change moved to the measured drugs'
(:mod:`rnadiff.conditioning._unseen_drugs`), with the model's fitted trust in structure."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from rnadiff.conditioning import _conditions as conditions
from rnadiff.conditioning._anchors import anchor_cells
from rnadiff.conditioning._unseen_drugs import drug_weights, unseen_drug_shifts
from rnadiff.data._molecules import tanimoto_matrix

if TYPE_CHECKING:
    from rnadiff.model._model import RNADiffusion
    from rnadiff.sampling._engine import SamplingEngine

logger = logging.getLogger("rnadiff")


def moved(
    model: RNADiffusion, engine: SamplingEngine, obs_src, obs_tgt, x_src, x_log, anchor: bool
) -> tuple[np.ndarray, dict]:
    """``x_log`` with the cells of unseen drugs moved (see the module doc) and
    ``{drug: {token: weight}}`` of what their mean change was taken from (empty: none moved,
    e.g. ``anchor=False``, no anchors, or a model without a fitted trust in structure)."""
    fit = model.prior or {}
    trust, pkey = fit.get("structure_trust"), engine.registry.perturbation_key
    if not anchor or model.anchors is None or trust is None or engine.features is None:
        return x_log, {}
    trained = set(engine.trained_tokens)
    tokens = engine.registry[pkey].tokens
    unseen = [t for t in tokens if t not in trained and engine.features.is_molecule(t)]
    if not unseen:
        return x_log, {}
    molecules = [t for t in tokens if t in trained and engine.features.is_molecule(t)]
    names = unseen + molecules
    similarity = tanimoto_matrix(engine.features.tensors(names)[0]["molecule"].numpy())
    row = {t: i for i, t in enumerate(names)}

    chemical = conditions.chemical_tokens(model.registry)  # the drugs' average (no knock-outs)
    shares = {k: n for k, n in fit["shares"].items() if k in chemical}

    def weights_of(drug: str, measured) -> dict[str, float]:
        return drug_weights(
            drug, measured, shares=shares, trust=float(trust), molecules=molecules,
            similarity=lambda a, b: similarity[row[a], row[b]],
        )  # fmt: skip

    shift, reference, where, used = unseen_drug_shifts(
        model.anchors, engine.registry, obs_src, obs_tgt, x_src, x_log,
        unseen=unseen, weights_of=weights_of,
    )  # fmt: skip
    for drug, weights in used.items():
        top = list(weights.items())[:4]
        logger.info(
            "rnadiff: %s never measured: its mean change from the measured ones, trust in "
            "structure %.1f: %s%s (anchor=False: the network's own)",
            drug,
            float(trust),
            " + ".join(f"{w:.2f} x {k}" for k, w in top),
            f" + {len(weights) - len(top)} more" if len(weights) > len(top) else "",
        )
    if not where.any():
        return x_log, {}
    return anchor_cells(x_log, shift, reference, where), used
