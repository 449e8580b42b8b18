"""Would an ensemble of rnadiff networks predict better? (issue 24) Chosen on inner folds
only: the benchmark's held-out cell types are never scored here.

``python inner.py OUTER SEED``: the ``kang_loo_celltype`` outer fold OUTER (its held-out cell
type never used); within its training cells each other cell type's stimulated cells are held
out in turn (the nested study's inner folds) and predicted counterfactually from their own
control cells by three models trained with seeds SEED, SEED + 1000 and SEED + 2000
(everything else as the benchmark trains and predicts). Scored as the benchmark scores
(``_nested._scores``): each model alone, and the three models' cells pooled (their means
averaged; the pooled E-distance is not comparable: each source cell appears three times).
Rows appended to ``rows.csv``.

``python inner.py OUTER SEED joint``: one model with ``NetworkConfig(n_models=3)`` (three
networks trained side by side, sharing the condition embedding, averaged in the sampler)
against the benchmark's default, both at SEED. Rows appended to ``rows_joint.csv``.

``python inner.py papalexi|simdose SEED``: the same comparison on two other datasets.
``papalexi``: the outer ``papalexi_seen`` training cells of seed SEED split again (seed
SEED + 100), every knock-out's inner held-out cells predicted from the non-targeting cells
(measured conditions). ``simdose``: a simulated world (seed SEED >= 10) with ``sim_dose``'s
protocol, 1 and 10 uM of every drug held out and predicted from each cell type's control
cells (doses never measured).
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

from rnadiff import ModelConfig, NetworkConfig  # noqa: E402
from rnadiff.data import _splits as splits  # noqa: E402
from rnadiff.evaluation._benchmark import BenchConfig, prepare, rnadiff_predictions  # noqa: E402

K = 3


def main(outer: str, seed: int) -> None:
    torch.set_num_threads(1)
    config = BenchConfig()
    train = _nested._outer_splits(seed)[outer].train
    rows = []
    for split in splits.kang_loo_celltype(train, seed=seed):
        if split.fold == outer:  # its stimulated cells are the outer test: not in train
            continue
        prep = prepare(split, config)
        preds = []
        for k in range(K):
            member = dataclasses.replace(split, seed=seed + 1000 * k)
            out, timing, _ = rnadiff_predictions(member, config)
            x = out[split.evaluations[0].name][_nested.CF]
            preds.append(np.asarray(x.toarray() if hasattr(x, "toarray") else x))
            m = _nested._scores(split, prep, preds[-1])
            rows.append(dict(outer=outer, inner=split.fold, seed=seed, model=f"single {k}",
                             train_s=timing["train_s"], **m))  # fmt: skip
            print(outer, split.fold, k, m, flush=True)
        m = _nested._scores(split, prep, np.concatenate(preds))
        rows.append(dict(outer=outer, inner=split.fold, seed=seed, model=f"pooled {K}", **m))
        print(outer, split.fold, "pooled", m, flush=True)
    out = HERE / "rows.csv"
    pd.DataFrame(rows).to_csv(out, mode="a", header=not out.exists(), index=False)


def joint(outer: str, seed: int) -> None:
    torch.set_num_threads(1)
    configs = {
        "default": BenchConfig(),
        "joint 3": BenchConfig(model=ModelConfig(network=NetworkConfig(n_models=K))),
    }
    train = _nested._outer_splits(seed)[outer].train
    rows = []
    for split in splits.kang_loo_celltype(train, seed=seed):
        if split.fold == outer:
            continue
        prep = prepare(split, configs["default"])
        for name, config in configs.items():
            out, timing, _ = rnadiff_predictions(split, config)
            x = out[split.evaluations[0].name][_nested.CF]
            m = _nested._scores(split, prep, np.asarray(x))
            rows.append(dict(outer=outer, inner=split.fold, seed=seed, model=name,
                             train_s=timing["train_s"], **m))  # fmt: skip
            print(outer, split.fold, name, m, f"{timing['train_s']:.0f} s", flush=True)
    out = HERE / "rows_joint.csv"
    pd.DataFrame(rows).to_csv(out, mode="a", header=not out.exists(), index=False)


def other(which: str, seed: int) -> None:
    """``papalexi`` / ``simdose``: default against ``n_models=3`` (module doc)."""
    torch.set_num_threads(1)
    if which == "papalexi":
        from rnadiff import datasets

        data = splits.papalexi_clean(datasets.load("papalexi2021"))
        (outer,) = splits.papalexi_seen(data, seed=seed)
        (split,) = splits.papalexi_seen(outer.train, seed=seed + 100)
    else:
        import _drug_tasks as dt

        adata, _ = dt.sim_dose_world(seed)
        obs = adata.obs
        pert = (obs.perturbation != "control").to_numpy()
        held = pert & obs.dose.isin([1.0, 10.0]).to_numpy()
        evaluations = []
        for c in sorted(set(obs.cell_type)):
            ctrl = adata[(obs.cell_type == c).to_numpy() & ~pert]
            for drug in sorted(set(obs.perturbation[pert])):
                here = (obs.cell_type == c).to_numpy() & (obs.perturbation == drug).to_numpy()
                for dose in (1.0, 10.0):
                    target = {"perturbation": drug, "dose": dose}
                    real = adata[held & here & (obs.dose == dose).to_numpy()]
                    name = f"{c}:{drug}@{dose:g}"
                    condition = {"cell_type": c, **target}
                    evaluations.append(splits.Evaluation(name, ctrl, real, ctrl, target, condition))
        split = splits.Split("simdose", "inner", seed, adata[~held], dt._sim_setup(), evaluations)
    configs = {
        "default": BenchConfig(),
        "joint 3": BenchConfig(model=ModelConfig(network=NetworkConfig(n_models=K))),
    }
    prep = prepare(split, configs["default"])
    rows = []
    for name, config in configs.items():
        out, timing, _ = rnadiff_predictions(split, config)
        for ev in split.evaluations:
            one = dataclasses.replace(split, evaluations=[ev])
            m = _nested._scores(one, prep, np.asarray(out[ev.name][_nested.CF]))
            rows.append(dict(outer=which, inner=ev.name, seed=seed, model=name,
                             train_s=timing["train_s"], **m))  # fmt: skip
        print(
            which,
            seed,
            name,
            pd.DataFrame(rows).query("model == @name").mean(numeric_only=True).to_dict(),
            flush=True,
        )
    out = HERE / "rows_joint.csv"
    pd.DataFrame(rows).to_csv(out, mode="a", header=not out.exists(), index=False)


if __name__ == "__main__":
    if sys.argv[1] in ("papalexi", "simdose"):
        other(sys.argv[1], int(sys.argv[2]))
    elif sys.argv[3:] == ["joint"]:
        joint(sys.argv[1], int(sys.argv[2]))
    else:
        main(sys.argv[1], int(sys.argv[2]))
