"""Where ``compose`` reads each context's control profile (issue 24): the training mean of
its control cells (``"data"``) or the network's estimate from pure noise (``"network"``, the
default), nested on Kang's inner folds; the rule is the sampling engine's
``context_profiles`` setting.

``python nested.py SEED [FOLD,...]``: for each ``kang_loo_celltype`` outer fold (or those
named; held-out stimulated cell type T), the inner folds built from the outer training cells
alone (each other cell type's stimulated cells held out in turn) are predicted
counterfactually, as the benchmark predicts, with both rules from one trained model; then the
outer fold itself (one model, both rules). Scored as the benchmark scores
(``_nested._scores``). Rows appended to ``rows.csv`` (``level``: inner or outer).
"""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # benchmarks/
import _nested  # noqa: E402

from rnadiff.data import _splits as splits  # noqa: E402
from rnadiff.evaluation._benchmark import BenchConfig, prepare, rnadiff_predictions  # noqa: E402

RULES = (("data", None), ("network", None))


def both(
    split, level: str, outer: str, config: BenchConfig | None = None, rules=RULES, set_near=None
) -> list[dict]:
    """One model trained as the benchmark trains it (or with ``config``); its counterfactual
    under each rule of ``rules``: ``(context_profiles, near)``, ``near`` passed to
    ``set_near`` first when given (``ramp.py``)."""
    config = config or BenchConfig()
    prep = prepare(split, config)
    _, _, model = rnadiff_predictions(split, config)
    (ev,) = split.evaluations
    genes = list(model.preprocess.all_genes)
    kw = dict(steps=config.sampler_steps, seed=split.seed, progress=False, prior=True)
    rows = []
    for rule, near in rules:
        model.engine = dataclasses.replace(model.engine, context_profiles=rule)
        if near is not None:
            set_near(near)
        x = model.predict(ev.source, target=ev.target, **kw)[:, genes].X
        m = _nested._scores(split, prep, np.asarray(x))
        label = rule if near is None else f"{rule} {near}"
        rows.append(dict(level=level, outer=outer, fold=split.fold, seed=split.seed,
                         rule=label, **m))  # fmt: skip
        print(level, outer, split.fold, split.seed, label, m, flush=True)
    return rows


def main(seed: int, only: list[str] | None = None) -> None:
    torch.set_num_threads(1)
    rows = []
    for outer, outer_split in _nested._outer_splits(seed).items():
        if only and outer not in only:
            continue
        for split in splits.kang_loo_celltype(outer_split.train, seed=seed):
            if split.fold != outer:  # the outer held-out type has no stimulated cells here
                rows += both(split, "inner", outer)
        rows += both(outer_split, "outer", outer)
        out = HERE / "rows.csv"
        pd.DataFrame(rows).to_csv(out, mode="a", header=not out.exists(), index=False)
        rows = []


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2].split(",") if len(sys.argv) > 2 else None)
