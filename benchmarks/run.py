"""The benchmark's one entry point: rnadiff, baselines and peers on held-out real data, and
studies (the benchmark under several configurations, ``benchmarks/studies/*.toml``).

    RNADIFF_DATA_DIR=../shared/data .venv/bin/python benchmarks/run.py [--tasks kang_loo_celltype]
        [--seeds 3] [--peers scgen,cpa,squidiff] [--out benchmarks/results/latest]
    .venv/bin/python benchmarks/run.py --study genes [--out benchmarks/results/studies/genes]

Writes ``folds.csv`` (one row per task, fold, seed, evaluation, method and metric),
``summary.csv`` (``task,method,metric,mean,sd,n``), ``paired.csv`` (rnadiff against every other
method on the same held-out data), ``summary.md``, ``timings.csv``, ``run.json`` and PNG plots;
a study writes one such folder per variant plus ``study.csv`` and ``study.md``.
``--save-predictions DIR`` keeps every method's predicted cells; ``--celleval DIR`` then scores
them with cell-eval itself (Kang and Papalexi seen: ``celleval.csv``, ``celleval_summary.csv``
and a section of ``summary.md`` scaled against cell-eval's cell-mean baseline).
Peers run in their own virtual environments (``benchmarks/peers/install.sh``); a peer that is not
installed or fails is reported as such.
"""

from __future__ import annotations

import argparse
import inspect
import json
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the harness's own modules

from _peers import CELLEVAL_TASKS, celleval_bundle, peer_label, peer_runner, run_celleval
from _reports import _celleval_lines, celleval_summary, cpu_info, plots_for, write_reports
from _studies import bench_config as study_config
from _studies import load_study, report
from _tasks import (
    EXTRA_TASKS,
    PEER_TASKS,
    STANDALONE_TASKS,
    all_tasks,
    n_jobs,
    task_splits,
    with_parents,
)

from rnadiff.data import _splits as splits
from rnadiff.data._io import write_csv, write_text
from rnadiff.evaluation._benchmark import (
    BenchConfig,
    Predictions,
    Prepared,
    load_predictions,
    prepare,
    run_split,
    save_predictions,
    score_split,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def run_job(task, seed, index, *, requested, peers, budget, config, out, with_rnadiff, save_to):
    """One split of one task and seed, in a worker process (one thread)."""
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    all_tasks()  # a fresh worker registers the standalone tasks
    if task in STANDALONE_TASKS:  # its own procedure, its own rows (and figures, into out)
        fn = STANDALONE_TASKS[task]
        kw = {"out": out} if "out" in inspect.signature(fn).parameters else {}
        rows, times = fn(seed, config, **kw)
        return rows, times.assign(task=task, seed=seed), "all", time.perf_counter() - t0
    split = list(task_splits(task, seed))[index]
    runners = {}
    if task in PEER_TASKS:
        runners = {peer_label(name): peer_runner(name, budget) for name in peers}
    extras = [fn for e, (parent, fn) in EXTRA_TASKS.items() if parent == task and e in requested]
    plots = plots_for(out)

    def on_predictions(split: splits.Split, prep: Prepared, predictions: Predictions) -> None:
        plots(split, prep, predictions)
        if save_to is not None:
            save_predictions(
                save_to / prediction_file(task, seed, index),
                split,
                index,
                prep.genes,
                predictions,
            )

    rows, times = run_split(
        split,
        config,
        peers={k: v for k, v in runners.items() if v is not None},
        with_rnadiff=with_rnadiff,
        extras=extras,
        on_predictions=on_predictions,
    )
    return rows, times, split.fold, time.perf_counter() - t0


def prediction_file(task: str, seed: int, index: int) -> str:
    return f"{task}/seed{seed}_split{index}.npz"


def rescore(folder: Path, out: Path, config: BenchConfig) -> pd.DataFrame:
    """Score saved predictions (``--save-predictions``) again with the current metrics code.

    Their rows replace the same task, fold, seed and method in ``out``'s ``folds.csv``; rows
    of anything not saved (design and ranking tasks) are kept as they are.
    """
    old = pd.read_csv(out / "folds.csv")
    new, task_seed_splits = [], {}  # each task and seed's splits built (data read) once
    for path in sorted(folder.glob("*/seed*_split*.npz")):
        meta, predictions = load_predictions(path)
        at = (meta["task"], meta["seed"])
        if at not in task_seed_splits:
            task_seed_splits[at] = list(task_splits(*at))
        split = task_seed_splits[at][meta["index"]]
        if str(split.fold) != meta["fold"]:
            raise SystemExit(
                f"{path}: split {meta['index']} is now {split.fold!r}, not {meta['fold']!r}"
            )
        prep = prepare(split, config)
        if prep.genes != meta["genes"]:
            raise SystemExit(f"{path}: the preprocessing now selects other genes; run again")
        rows = score_split(split, prep, predictions, config)
        print(f"rescored {meta['task']} {meta['fold']} seed {meta['seed']}: {len(rows)} rows")
        new.append(rows)
    if not new:
        raise SystemExit(f"no saved predictions in {folder}")
    new = pd.concat(new)

    def key(frame: pd.DataFrame) -> pd.Series:
        return frame[["task", "fold", "seed", "method"]].astype(str).agg("\x1f".join, axis=1)

    kept = old[~key(old).isin(set(key(new)))] if len(old) else old
    return pd.concat([kept, new], ignore_index=True)


def celleval(folder: Path, out: Path, config: BenchConfig) -> pd.DataFrame:
    """Score the predictions saved in ``folder`` (``--save-predictions``) of the tasks in
    ``CELLEVAL_TASKS`` with cell-eval itself (``peers/celleval_score.py``): its metrics per
    method, the challenge's cell-mean baseline and the scores scaled against it. Returns tidy
    rows ``task, fold, seed, method, metric, value`` (also ``out/celleval.csv``)."""
    import tempfile

    paths = [p for t in CELLEVAL_TASKS for p in sorted(folder.glob(f"{t}/seed*_split*.npz"))]
    if not paths:
        raise SystemExit(f"no saved predictions of {CELLEVAL_TASKS} in {folder}")
    with tempfile.TemporaryDirectory() as tmp:
        bundles, task_seed_splits = [], {}
        for path in paths:
            meta, predictions = load_predictions(path)
            at = (meta["task"], meta["seed"])
            if at not in task_seed_splits:
                task_seed_splits[at] = list(task_splits(*at))
            split = task_seed_splits[at][meta["index"]]
            prep = prepare(split, config)
            if prep.genes != meta["genes"]:
                raise SystemExit(f"{path}: the preprocessing now selects other genes")
            bundle = Path(tmp) / f"{meta['task']}_{meta['seed']}_{meta['index']}.npz"
            celleval_bundle(bundle, split, prep, predictions)
            bundles.append(bundle)
        run_celleval(bundles, Path(tmp) / "celleval.csv")
        rows = pd.read_csv(Path(tmp) / "celleval.csv")
    old = out / "celleval.csv"
    if old.is_file():  # other tasks' rows stay
        earlier = pd.read_csv(old)
        rows = pd.concat([earlier[~earlier.task.isin(set(rows.task))], rows], ignore_index=True)
    write_csv(rows, old, index=False)
    return rows


def bench_config(max_steps: int | None, width: int | None, n_top_genes=None) -> BenchConfig:
    """The benchmark's configuration: rnadiff's defaults, or another length, width or gene
    budget (``n_top_genes``: a number, ``"all"``, or None for the default)."""
    overrides = {} if width is None else {"network.width": width}
    if n_top_genes is not None:
        overrides["n_top_genes"] = n_top_genes
    if max_steps is not None:
        overrides["max_steps"] = max_steps
    return study_config(overrides)


def kept_rows(
    old: pd.DataFrame, tasks: set, seeds: range, *, keep_methods: set = frozenset()
) -> pd.DataFrame:
    """The rows of an earlier run that ``--update`` keeps: every task not run again, the seeds
    of a re-run task that are not run again, and the rows of ``keep_methods``."""
    again = old.task.isin(tasks) & old.seed.isin(list(seeds))
    return old[~again | old.method.isin(keep_methods)]


def run_benchmark(
    requested: list[str],
    *,
    seeds: int,
    first_seed: int = 0,
    config: BenchConfig,
    out: Path,
    peers: list[str],
    budget: str,
    jobs: int,
    with_rnadiff: bool = True,
    save_to: Path | None = None,
    update: bool = False,
    reuse_peers: Path | None = None,
    meta: dict | None = None,
) -> str:
    """Run the ``requested`` tasks (every split, ``seeds`` seeds) into ``out``."""
    t_start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    base = with_parents(requested)
    jobs_list = [
        (task, seed, i)
        for task in base  # the tasks with peers first: the longest jobs
        for seed in range(first_seed, first_seed + seeds)
        for i in range(n_jobs(task))
    ]
    common = dict(
        requested=requested,
        peers=sorted(peers),
        budget=budget,
        config=config,
        out=out,
        with_rnadiff=with_rnadiff,
        save_to=save_to,
    )
    all_rows, all_times = [], []
    if update:  # keep the other tasks' results of the earlier run in out, and other seeds'
        ran = set(base) | {e for e in requested if e in EXTRA_TASKS}
        run_seeds = range(first_seed, first_seed + seeds)
        old_rows = pd.read_csv(out / "folds.csv")
        old_times = pd.read_csv(out / "timings.csv")
        all_rows.append(kept_rows(old_rows, ran, run_seeds))
        # a design or ranking task's times are filed under its parent task: keep those of the
        # ones not run again
        kept = {f"rnadiff: {fn.__name__}" for e, (_, fn) in EXTRA_TASKS.items() if e not in ran}
        all_times.append(kept_rows(old_times, set(base), run_seeds, keep_methods=kept))
        print(f"updating {sorted(ran)} (seeds {list(run_seeds)}) in {out}", flush=True)
    if reuse_peers is not None:  # peers' rows of an earlier run on the same splits
        old_rows = pd.read_csv(reuse_peers / "folds.csv")
        old_times = pd.read_csv(reuse_peers / "timings.csv")
        # the peers that earlier run has; the others run now
        names = {peer_label(p) for p in peers} & set(old_rows.method[old_rows.task.isin(base)])
        old_times = old_times[old_times.method.isin(names) & old_times.task.isin(base)]
        if "budget" not in old_times:  # runs before budgets were recorded per row
            earlier = json.loads((reuse_peers / "run.json").read_text())
            old_times = old_times.assign(budget=earlier.get("peer_budget"))
        all_rows.append(old_rows[old_rows.method.isin(names) & old_rows.task.isin(base)])
        all_times.append(old_times.assign(reused_from=str(reuse_peers)))
        common["peers"] = sorted(p for p in peers if peer_label(p) not in names)
        print(f"reusing {sorted(names)} from {reuse_peers}", flush=True)
    print(f"{len(jobs_list)} jobs on {jobs} worker(s), one thread each", flush=True)
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(run_job, *job, **common): job for job in jobs_list}
        for future in as_completed(futures):
            task, seed, _ = futures[future]
            rows, times, fold, seconds = future.result()
            all_rows.append(rows)
            all_times.append(times)
            print(f"{task} {fold} seed {seed}: {seconds:.0f} s", flush=True)
            write_csv(pd.concat(all_rows), out / "folds.csv", index=False)
            write_csv(pd.concat(all_times), out / "timings.csv", index=False)
    text = write_reports(pd.concat(all_rows), pd.concat(all_times), out)
    info = {
        **(meta or {}),
        "tasks": requested,
        "seeds": seeds,
        "first_seed": first_seed,
        "jobs": jobs,
        "bench_config": repr(config),
        "peers": sorted(peers),
        "peer_budget": budget,
        "reused_peers_from": str(reuse_peers) if reuse_peers else None,
        "updated_tasks": base if update else None,
        "wall_s": time.perf_counter() - t_start,
        "python": sys.version.split()[0],
        "cpu": cpu_info(),
    }
    previous = out / "run.json"
    if update and previous.is_file():  # the first run's settings stay; updates are added
        first = json.loads(previous.read_text())
        first.setdefault("updates", []).append(info)
        info = first
    write_text(json.dumps(info, indent=1), previous)
    return text


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the workers and peers
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    parser = argparse.ArgumentParser(description="rnadiff benchmark and studies")
    parser.add_argument(
        "--tasks",
        default=",".join(all_tasks()),
        help="comma-separated; design/ranking tasks also run their parent task",
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seeds first-seed .. first-seed + seeds - 1 (to add seeds to an earlier run)",
    )
    parser.add_argument(
        "--study",
        default=None,
        help="run a study: a name of benchmarks/studies/ (or a TOML file) with its tasks, "
        "seeds and variants; results to --out (default results/studies/NAME)",
    )
    parser.add_argument("--variants", default=None, help="with --study: only these variants")
    parser.add_argument(
        "--max-steps", type=int, default=None, help="training steps (default: TrainConfig)"
    )
    parser.add_argument("--width", type=int, default=None, help="rnadiff's hidden width")
    parser.add_argument(
        "--n-top-genes",
        default=None,
        help="genes modelled at most (a number, or 'all'; default: PreprocessConfig's)",
    )
    parser.add_argument("--peers", default="scgen,cpa,squidiff")
    parser.add_argument("--peer-budget", default="quick", choices=["quick", "full"])
    parser.add_argument("--no-rnadiff", action="store_true", help="baselines and peers only")
    parser.add_argument("--out", type=Path, default=None, help="default: results/latest")
    parser.add_argument(
        "--update",
        action="store_true",
        help="re-run only --tasks at the seeds asked for (--seeds, --first-seed) and keep every "
        "other row already in --out (other tasks, other seeds)",
    )
    parser.add_argument(
        "--reuse-peers",
        type=Path,
        default=None,
        help="take the peers' rows and timings from this earlier results folder (same splits, "
        "seeds and budget) instead of running them again",
    )
    parser.add_argument(
        "--jobs", type=int, default=2, help="splits run at once, one thread each (2 cores: 2)"
    )
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="run nothing: rebuild the reports from folds.csv and timings.csv in --out",
    )
    parser.add_argument(
        "--save-predictions",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write every method's predicted cells per split to DIR/<task>/ (.npz)",
    )
    parser.add_argument(
        "--celleval",
        type=Path,
        default=None,
        metavar="DIR",
        help="run nothing: score the predictions saved in DIR of "
        f"{', '.join(CELLEVAL_TASKS)} with cell-eval (its venv: peers/install.sh celleval) "
        "into --out/celleval.csv and rebuild the reports",
    )
    parser.add_argument(
        "--rescore-predictions",
        type=Path,
        default=None,
        metavar="DIR",
        help="run nothing: score the predictions saved in DIR with the current metrics code",
    )
    args = parser.parse_args()
    if args.study is not None:
        study = load_study(args.study)
        out = args.out or RESULTS / "studies" / study["name"]
        meta = study["study"]
        if meta.get("procedure") == "nested":  # defaults re-chosen on inner folds
            import _nested

            param = meta["param"]
            for seed in meta.get("seeds", [meta.get("seed", 0)]):  # one outer split per seed
                _nested.run(param, seed=int(seed), jobs=args.jobs, tag=meta.get("tag", ""))
            return
        names = list(study["variants"])
        if args.variants:
            names = [v for v in names if v in args.variants.split(",")]
        for name in names:
            print(f"study {study['name']}: variant {name}", flush=True)
            run_benchmark(
                meta["tasks"],
                seeds=int(meta.get("seeds", 3)),
                config=study_config(study["variants"][name] or {}),
                out=out / name,
                peers=[],
                budget=args.peer_budget,
                jobs=args.jobs,
                meta={"study": study["name"], "variant": name},
            )
        print(report(study, out))
        return
    out = args.out or RESULTS / "latest"
    config = bench_config(args.max_steps, args.width, args.n_top_genes)
    if args.celleval is not None:
        rows = celleval(args.celleval, out, config)
        if (out / "folds.csv").is_file():  # the run's reports, now with cell-eval's section
            folds, times = (pd.read_csv(out / f) for f in ("folds.csv", "timings.csv"))
            print(write_reports(folds, times, out))
        else:
            print("\n".join(_celleval_lines(celleval_summary(rows))))
        return
    if args.rescore_predictions is not None:
        rows = rescore(args.rescore_predictions, out, config)
        write_csv(rows, out / "folds.csv", index=False)
        print(write_reports(rows, pd.read_csv(out / "timings.csv"), out))
        return
    if args.rescore:
        rows, times = (pd.read_csv(out / f) for f in ("folds.csv", "timings.csv"))
        print(write_reports(rows, times, out))
        return
    peers = []  # installed peers; each worker builds its own runners
    for name in filter(None, args.peers.split(",")):
        if peer_runner(name, args.peer_budget) is None:
            print(f"peer {name}: not installed (benchmarks/peers/install.sh {name}); skipped")
        else:
            peers.append(name)
    if args.reuse_peers is not None:
        peers = [p for p in args.peers.split(",") if p]
    text = run_benchmark(
        [t for t in args.tasks.split(",") if t],
        seeds=args.seeds,
        first_seed=args.first_seed,
        config=config,
        out=out,
        peers=peers,
        budget=args.peer_budget,
        jobs=args.jobs,
        with_rnadiff=not args.no_rnadiff,
        save_to=args.save_predictions,
        update=args.update,
        reuse_peers=args.reuse_peers,
        meta={"max_steps": args.max_steps, "width": args.width, "n_top_genes": args.n_top_genes},
    )
    print(text)


if __name__ == "__main__":
    main()
