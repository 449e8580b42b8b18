"""How large should the ``compose`` transfer be, and does it depend on the source's distance?

For every fold of a leave-one-cell-type-out task (Kang 2018, or a simulated screen with the
same design), one model is trained and the held-out type's counterfactual is predicted at a
grid of fixed ``transfer_scale`` values (1 to 2). Each row also records the relative distance
of the source context (:func:`rnadiff.conditioning.relative_transfer_distance`: the squared
distance of the model's control profiles from the held-out type to its nearest measured type,
over the median spacing of the measured types).

``--folds inner`` trains on each outer fold's training cells with one more type's stimulated
cells held out (the inner folds of ``_nested.py``: the benchmark's held-out types are never
scored), ``--folds outer`` on the benchmark's own folds. The rule
``s = 1 + 0.5 * min(1, r)`` (the ``compose`` default since 2026-12-07) was chosen from the
inner rows of Kang; the simulated worlds (``sim:<world>``, 5 cell types x (control, one drug),
2,000 cells x 1,000 genes, NB counts; :func:`sim_loo`) are a second dataset it was not chosen
on. Results: ``results/studies/transfer_grid/<data>_<folds>_seed<seed>.csv``; the summary on
the docs' transfer page.

    RNADIFF_DATA_DIR=../shared/data OMP_NUM_THREADS=1 .venv/bin/python \\
        benchmarks/transfer_grid.py --data kang|sim:0 --folds inner|outer --seed 0 [--jobs 2]

Kang inner folds: 20 trainings per seed, ~4 min at --jobs 2 on 2 idle cores; a simulated
world ~2x that.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "studies" / "transfer_grid"
GRID = (1.0, 1.125, 1.25, 1.375, 1.5, 1.75, 2.0)


def sim_loo(world: int, n_cells: int = 2000):
    """A simulated screen laid out as Kang: ``group_id`` (ctrl / stim: one drug at 10 uM,
    24 h) x ``cluster_id`` (5 cell types), 200 cells each."""
    from rnadiff.datasets import simulate

    adata, _ = simulate(
        n_cells,
        seed=world,
        n_genes=1000,
        n_cell_types=5,
        n_genetic=0,
        n_drugs=1,
        n_combinations=0,
        doses=(10.0,),
        times=(24.0,),
        control_weight=1.0,
        drug_scale=1.0,
    )
    obs = adata.obs
    adata.obs = pd.DataFrame(
        {
            "group_id": np.where(obs["perturbation"] == "control", "ctrl", "stim"),
            "cluster_id": obs["cell_type"].astype(str),
        },
        index=obs.index,
    ).astype("category")
    return adata


def outer_splits(data: str, seed: int) -> dict:
    from rnadiff import datasets
    from rnadiff.data import _splits as splits

    adata = datasets.load("kang2018_ifnb") if data == "kang" else sim_loo(int(data.split(":")[1]))
    return {s.fold: s for s in splits.kang_loo_celltype(adata, seed=seed)}


def source_distance(model, condition: dict) -> dict:
    """The held-out condition's nearest measured context, its squared distance and relative
    distance (as ``compose`` computes them)."""
    from rnadiff.conditioning._conditions import condition_rows

    eng = model.engine
    obs = pd.DataFrame([condition])
    rows = condition_rows(eng.registry, obs)
    contexts, weights, relative = eng.context_plan(np.ones(1, dtype=bool), rows)
    source = [contexts[j] for j in np.flatnonzero(weights[0])]
    return {"source": "|".join(map(str, source)), "relative_distance": float(relative[0])}


def job(data: str, outer: str, inner: str | None, seed: int) -> list[dict]:
    import torch

    sys.path.insert(0, str(HERE))
    import _nested

    from rnadiff.data import _splits as splits
    from rnadiff.evaluation._benchmark import prepare, rnadiff_predictions

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    split = outer_splits(data, seed)[outer]
    if inner is not None:
        split = next(s for s in splits.kang_loo_celltype(split.train, seed=seed) if s.fold == inner)
    config = _nested.config_for("compose", None)
    prep = prepare(split, config)
    (ev,) = split.evaluations
    _, _, model = rnadiff_predictions(split, config)
    where = source_distance(model, ev.condition)
    kw = dict(steps=config.sampler_steps, seed=split.seed, progress=False, prior=True)
    rows = []
    for scale in (None, *GRID):  # None: the default (by distance)
        pred = model.predict(ev.source, target=ev.target, transfer_scale=scale, **kw)
        (used,) = (r["scale"] for r in pred.uns["rnadiff"]["transfer_sources"].values())
        rows.append(
            {
                "data": data,
                "seed": seed,
                "outer": outer,
                "inner": inner or "",
                "rule": "by distance" if scale is None else f"fixed {scale:g}",
                "scale": used,
                **where,
                **_nested._scores(split, prep, pred.X),
            }
        )
    seconds = time.perf_counter() - t0
    print(f"{data} {outer} / {inner}: r={where['relative_distance']:.2f} ({seconds:.0f} s)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="kang", help="kang, or sim:<world> (a simulated screen)")
    parser.add_argument("--folds", choices=("inner", "outer"), default="inner")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    folds = list(outer_splits(args.data, args.seed))
    if args.folds == "inner":
        jobs = [(args.data, o, i, args.seed) for o in folds for i in folds if i != o]
    else:
        jobs = [(args.data, o, None, args.seed) for o in folds]
    with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(job, *j) for j in jobs]
        rows = [r for f in futures for r in f.result()]
    OUT.mkdir(parents=True, exist_ok=True)
    name = f"{args.data.replace(':', '')}_{args.folds}_seed{args.seed}.csv"
    pd.DataFrame(rows).to_csv(OUT / name, index=False)
    print(f"wrote {OUT / name}")
    metrics = ["pearson_delta_top100", "r2_mean_top100", "edistance"]
    table = pd.DataFrame(rows).groupby("rule", sort=False)[metrics].mean()
    print(table.round(3).to_string())


if __name__ == "__main__":
    main()
