"""The benchmark: rnadiff, baselines and peer tools on held-out real data.

    RNADIFF_DATA_DIR=../shared/data .venv/bin/python benchmarks/run.py [--tasks kang_loo_celltype]
        [--seeds 3] [--max-steps 2000] [--peers scgen,cpa,squidiff] [--out benchmarks/results]

Writes ``folds.csv`` (one row per task, fold, seed, evaluation, method and metric),
``summary.csv`` (``task,method,metric,mean,sd,n``), ``paired.csv`` (rnadiff against every other
method on the same held-out data), ``summary.md``, ``timings.csv`` and PNG plots.
Peers run in their own virtual environments (``benchmarks/peers/install.sh``); a peer that is not
installed or fails is reported as such.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from rnadiff import datasets
from rnadiff.data import _splits as splits
from rnadiff.evaluation import _design_tasks as design_tasks
from rnadiff.evaluation._benchmark import (
    BenchConfig,
    Predictions,
    Prepared,
    load_predictions,
    paired_comparison,
    peer_inputs,
    prepare,
    run_split,
    save_predictions,
    score_split,
    summarize,
)
from rnadiff.evaluation._metrics import top_de_genes
from rnadiff.evaluation._plots import plot_fold_bars, plot_mean_change, plot_umap

ROOT = Path(__file__).resolve().parents[1]
HEADLINE = [
    "pearson_delta_top100",
    "r2_mean_top100",
    "r2_mean_all",
    "edistance",
    "mmd",
    "knn_auc",
    "discrimination",
    "discrimination_all_genes",
    "top1",
    "top5",
    "mrr",
    "rank",
    "success_rate",
    "realism_ratio",
    "pearson_delta",
]


# design and ranking tasks run on the model trained for their parent task
EXTRA_TASKS = {
    "papalexi_rank": ("papalexi_seen", design_tasks.papalexi_rank_rows),
    "papalexi_marker_rank": ("papalexi_seen", design_tasks.papalexi_marker_rows),
    "kang_design": ("kang_loo_celltype", design_tasks.kang_design_rows),
}
BASE_TASKS = [
    "kang_loo_celltype",
    "papalexi_seen",
    "papalexi_unseen",
    "hsmm_time",
    "kang9k_heldout",
]


def task_splits(task: str, seed: int):
    if task == "kang_loo_celltype":
        return splits.kang_loo_celltype(datasets.load("kang2018_ifnb"), seed=seed)
    if task in ("papalexi_seen", "papalexi_unseen"):
        data = splits.papalexi_clean(datasets.load("papalexi2021"))
        return getattr(splits, task)(data, seed=seed)
    if task == "hsmm_time":
        return splits.hsmm_time(datasets.load("trapnell2014_hsmm"), seed=seed)
    if task == "kang9k_heldout":
        return splits.kang9k_heldout(datasets.load("kang2018_ifnb_9k"), seed=seed)
    raise SystemExit(f"unknown task {task!r}")


class PeerServer:
    """A peer runner kept alive across folds (``run_<peer>.py --serve``) in one worker.

    The peer's imports (pertpy 12 s, cpa 8 s on this machine) are then paid once per worker
    instead of once per fold; every task is seeded as in a fresh process.
    """

    def __init__(self, python: Path, script: Path):
        self.log = tempfile.TemporaryFile(mode="w+")  # the tools' output, for error messages
        self.proc = subprocess.Popen(
            [str(python), str(script), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )

    def request(self, argv: list[str]) -> None:
        """Run one task; raise ``RuntimeError`` with the peer's reason when it fails."""
        self.proc.stdin.write(json.dumps(argv) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:  # the process died (killed, crashed interpreter)
            self.log.seek(0)
            tail = self.log.read().strip().splitlines() or ["no output"]
            raise RuntimeError(f"peer process exited ({self.proc.wait()}): {tail[-1]}")
        reply = json.loads(line)
        if not reply["ok"]:
            raise RuntimeError(reply["error"])


_SERVERS: dict[str, PeerServer] = {}  # per worker process: one server per peer


def peer_runner(name: str, budget: str):
    """A function running peer ``name`` in its own venv on a split (Kang-style contract)."""
    python = ROOT / ".peers" / name / "bin" / "python"
    script = ROOT / "benchmarks" / "peers" / f"run_{name}.py"
    if not python.exists() or not script.exists():
        return None

    def request(argv: list[str]) -> None:
        server = _SERVERS.get(name)
        if server is None or server.proc.poll() is not None:
            server = _SERVERS[name] = PeerServer(python, script)
        try:
            server.request(argv)
        except RuntimeError as e:
            raise RuntimeError(f"{name} failed: {e}") from None

    def run(split: splits.Split, prep: Prepared) -> tuple[Predictions, dict]:
        out: Predictions = {}
        timing = {"train_s": 0.0, "predict_s": 0.0}
        setup = split.setup
        for ev in split.evaluations:
            with tempfile.TemporaryDirectory() as tmp:
                files = {k: Path(tmp) / f"{k}.h5ad" for k in ("train", "source", "pred")}
                for k, a in peer_inputs(split, ev, prep).items():
                    if k in files:
                        a.write_h5ad(files[k])
                request(
                    [
                        "--train",
                        str(files["train"]),
                        "--source",
                        str(files["source"]),
                        "--out",
                        str(files["pred"]),
                        "--perturbation-key",
                        setup["perturbation_key"],
                        "--control",
                        setup["control"],
                        "--target",
                        str(ev.target[setup["perturbation_key"]]),
                        "--cell-type-key",
                        setup["cell_type_key"],
                        "--seed",
                        str(split.seed),
                        "--budget",
                        budget,
                    ]
                )
                pred = ad.read_h5ad(files["pred"])
                genes = list(prep.state.genes)
                x = pred[:, genes].X
                out[ev.name] = {name: np.asarray(x.toarray() if hasattr(x, "toarray") else x)}
                info = pred.uns.get("peer", {})
                timing["train_s"] += float(info.get("train_s", 0.0))
                timing["predict_s"] += float(info.get("predict_s", 0.0))
                timing["version"] = str(info.get("version", "?"))
        return out, timing

    return run


def run_job(task, seed, index, *, requested, peers, budget, config, out, with_rnadiff, save_to):
    """One split of one task and seed, in a worker process (one thread)."""
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    split = list(task_splits(task, seed))[index]
    runners = {}
    if task == "kang_loo_celltype":
        runners = {name: peer_runner(name, budget) for name in peers}
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


def cpu_info() -> dict:
    """The CPU the run had (its speed varies by up to 1.7x between machine hours)."""
    info: dict = {"cores": os.cpu_count()}
    try:
        block = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return info
    for line in block.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "cpu family", "model", "stepping", "cpu MHz"):
            info[key.strip()] = value.strip()
    return info


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


def plots_for(out: Path):
    """Plots of the first seed's predictions: UMAP and predicted vs real mean change."""

    def on_predictions(split: splits.Split, prep: Prepared, predictions: Predictions) -> None:
        if split.seed != 0 or split.task not in ("kang_loo_celltype", "hsmm_time"):
            return
        for ev in split.evaluations:
            pops, preds = prep.evaluations[ev.name], predictions.get(ev.name, {})
            methods = {m: x for m, x in preds.items() if m != "baseline: control"}
            name = f"{split.task}_{str(split.fold).replace(' ', '_').replace('+', '')}"
            plot_umap(
                {"real target": pops["real"], "real control": pops["control"]},
                methods,
                out / f"umap_{name}.png",
                title=f"{split.task}: {ev.name} (seed 0)",
            )
            control = pops["control"].mean(axis=0)
            plot_mean_change(
                {m: x.mean(axis=0) - control for m, x in methods.items()},
                pops["real"].mean(axis=0) - control,
                out / f"mean_change_{name}.png",
                highlight=top_de_genes(pops["real"], pops["control"], 100),
                title=f"{split.task}: {ev.name} (seed 0)",
            )

    return on_predictions


# the method whose paired comparisons summary.md shows, per task (paired.csv has them all)
PRIMARY = ("rnadiff (counterfactual)", "rnadiff (combined)", "rnadiff design (markers)")


def markdown(
    summary: pd.DataFrame, timings: pd.DataFrame | None = None, paired: pd.DataFrame | None = None
) -> str:
    """Mean ± sd per method and headline metric, per task; the paired comparison of the task's
    primary rnadiff method with every other method; notes of methods that could not run and
    training / prediction time per method."""
    lines = []
    for task, frame in summary.groupby("task"):
        frame = frame[frame.metric.isin(HEADLINE)]
        cells = frame.assign(
            v=frame["mean"].map("{:.3f}".format) + " ± " + frame["sd"].map("{:.3f}".format)
        )
        table = cells.pivot(index="method", columns="metric", values="v")
        table = table[[m for m in HEADLINE if m in table.columns]].fillna("n/a")
        lines += [
            f"### {task}",
            "",
            "| method | " + " | ".join(table.columns) + " |",
            "|---" * (len(table.columns) + 1) + "|",
        ]
        lines += [f"| {m} | " + " | ".join(row) + " |" for m, row in table.iterrows()]
        lines.append("")
        if paired is not None:
            lines += _paired_lines(paired[paired.task == task])
        if timings is not None and "task" in timings:
            lines += _notes(timings[timings.task == task])
    return "\n".join(lines)


def _paired_lines(paired: pd.DataFrame) -> list[str]:
    """Advantage of the primary method over each other one: mean ± se (better/equal/worse)."""
    primary = [m for m in PRIMARY if m in set(paired.method)]
    if not primary:
        return []
    frame = paired[(paired.method == primary[0]) & paired.metric.isin(HEADLINE)]
    if frame.empty:
        return []
    cells = frame.assign(
        v=frame["mean"].map("{:+.3f}".format)
        + " ± "
        + frame["se"].map("{:.3f}".format)
        + " ("
        + frame[["better", "equal", "worse"]].astype(str).agg("/".join, axis=1)
        + ", "
        + frame["verdict"]
        + ")"
    )
    table = cells.pivot(index="reference", columns="metric", values="v")
    table = table[[m for m in HEADLINE if m in table.columns]].fillna("n/a")
    return [
        f"Paired advantage of {primary[0]} (positive: better; mean ± se over pairs of fold, "
        "seed and evaluation; better/equal/worse pairs; verdict at 2 se):",
        "",
        "| versus | " + " | ".join(table.columns) + " |",
        "|---" * (len(table.columns) + 1) + "|",
        *[f"| {m} | " + " | ".join(row) + " |" for m, row in table.iterrows()],
        "",
    ]


def write_reports(rows: pd.DataFrame, times: pd.DataFrame, out: Path) -> str:
    """``summary.csv``, ``paired.csv``, ``summary.md`` and ``kang_folds.png`` from the rows;
    returns the markdown."""
    summary = summarize(rows)
    summary.to_csv(out / "summary.csv", index=False)
    paired = paired_comparison(rows)
    paired.to_csv(out / "paired.csv", index=False)
    text = markdown(summary, times, paired)
    (out / "summary.md").write_text(text)
    if "kang_loo_celltype" in set(rows.task):
        plot_fold_bars(
            rows[rows.task == "kang_loo_celltype"],
            out / "kang_folds.png",
            metrics=["pearson_delta_top100", "r2_mean_top100", "edistance"],
        )
    return text


def _notes(times: pd.DataFrame) -> list[str]:
    out = []
    for column in ("note", "error"):
        if column in times:
            for (method, text), group in times.dropna(subset=[column]).groupby(["method", column]):
                out.append(f"- {method}: {text} ({len(group)} splits)")
    ran = times[times.get("train_s", pd.Series(dtype=float)).fillna(0) > 0]
    if len(ran):
        per = ran.groupby("method")[["train_s", "predict_s"]].mean()
        for method, row in per.iterrows():
            out.append(
                f"- time, {method}: train {row.train_s:.0f} s, predict {row.predict_s:.1f} s "
                "per split (mean)"
            )
    return [*out, ""] if out else []


def bench_config(max_steps: int | None, width: int | None, n_top_genes=None) -> BenchConfig:
    """The benchmark's configuration: rnadiff's defaults, or another length, width or gene
    budget (``n_top_genes``: a number, ``"all"``, or None for the default)."""
    from rnadiff import ModelConfig, NetworkConfig

    genes = {}
    if n_top_genes is not None:
        genes = {"n_top_genes": None if n_top_genes == "all" else int(n_top_genes)}
    if width is None:
        return BenchConfig(max_steps=max_steps, **genes)
    model = ModelConfig(network=NetworkConfig(width=width))
    return BenchConfig(max_steps=max_steps, model=model, **genes)


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the workers and peers
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    parser = argparse.ArgumentParser(description="rnadiff benchmark")
    parser.add_argument(
        "--tasks",
        default=",".join(BASE_TASKS + list(EXTRA_TASKS)),
        help="comma-separated; design/ranking tasks also run their parent task",
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--max-steps", type=int, default=None, help="training steps (default: TrainConfig)"
    )
    parser.add_argument(
        "--width",
        type=int,
        default=None,
        help="rnadiff's hidden width (default: NetworkConfig's), to benchmark another one",
    )
    parser.add_argument(
        "--n-top-genes",
        default=None,
        help="genes modelled at most (a number, or 'all'; default: PreprocessConfig's)",
    )
    parser.add_argument("--peers", default="scgen,cpa,squidiff")
    parser.add_argument("--peer-budget", default="quick", choices=["quick", "full"])
    parser.add_argument("--no-rnadiff", action="store_true", help="baselines and peers only")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument(
        "--update",
        action="store_true",
        help="re-run only --tasks and keep every other task's rows already in --out",
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
        help="run nothing: rebuild summary.csv, paired.csv, summary.md and kang_folds.png from "
        "folds.csv and timings.csv already in --out",
    )
    parser.add_argument(
        "--save-predictions",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write every method's predicted cells per split to DIR/<task>/ (.npz, "
        "outside git: an estimated 0.2-0.3 GB for a full run), for --rescore-predictions",
    )
    parser.add_argument(
        "--rescore-predictions",
        type=Path,
        default=None,
        metavar="DIR",
        help="run nothing: score the predictions saved in DIR with the current metrics code, "
        "replace their rows in --out's folds.csv and rebuild the reports",
    )
    args = parser.parse_args()
    if args.rescore_predictions is not None:
        rows = rescore(
            args.rescore_predictions,
            args.out,
            bench_config(args.max_steps, args.width, args.n_top_genes),
        )
        rows.to_csv(args.out / "folds.csv", index=False)
        times = pd.read_csv(args.out / "timings.csv")
        print(write_reports(rows, times, args.out))
        return
    if args.rescore:
        rows, times = (pd.read_csv(args.out / f) for f in ("folds.csv", "timings.csv"))
        print(write_reports(rows, times, args.out))
        return
    config = bench_config(args.max_steps, args.width, args.n_top_genes)
    args.out.mkdir(parents=True, exist_ok=True)
    peers = []  # installed peers; each worker builds its own runners
    for name in filter(None, args.peers.split(",")):
        if peer_runner(name, args.peer_budget) is None:
            print(f"peer {name}: not installed (benchmarks/peers/install.sh {name}); skipped")
        else:
            peers.append(name)
    t_start = time.perf_counter()
    requested = [t for t in args.tasks.split(",") if t]
    unknown = [t for t in requested if t not in BASE_TASKS and t not in EXTRA_TASKS]
    if unknown:
        raise SystemExit(f"unknown tasks {unknown}; choose from {BASE_TASKS + list(EXTRA_TASKS)}")
    base = [
        t
        for t in BASE_TASKS
        if t in requested or any(EXTRA_TASKS[e][0] == t for e in requested if e in EXTRA_TASKS)
    ]
    jobs = [
        (task, seed, i)
        for task in base  # Kang first: its folds also run the peers, the longest jobs
        for seed in range(args.seeds)
        for i in range(len(list(task_splits(task, 0))))
    ]
    common = dict(
        requested=requested,
        peers=sorted(peers),
        budget=args.peer_budget,
        config=config,
        out=args.out,
        with_rnadiff=not args.no_rnadiff,
        save_to=args.save_predictions,
    )
    all_rows, all_times = [], []
    if args.update:  # keep the other tasks' results of the earlier run in --out
        ran = set(base) | {e for e in requested if e in EXTRA_TASKS}
        old_rows = pd.read_csv(args.out / "folds.csv")
        old_times = pd.read_csv(args.out / "timings.csv")
        all_rows.append(old_rows[~old_rows.task.isin(ran)])
        # a design or ranking task's times are filed under its parent task: keep those of the
        # ones not run again
        kept = {f"rnadiff: {fn.__name__}" for e, (_, fn) in EXTRA_TASKS.items() if e not in ran}
        all_times.append(old_times[~old_times.task.isin(base) | old_times.method.isin(kept)])
        print(f"updating {sorted(ran)} in {args.out}", flush=True)
    if args.reuse_peers is not None:  # peers' rows of an earlier run on the same splits
        old_rows = pd.read_csv(args.reuse_peers / "folds.csv")
        old_times = pd.read_csv(args.reuse_peers / "timings.csv")
        names = set(args.peers.split(",")) - {""}
        all_rows.append(old_rows[old_rows.method.isin(names) & old_rows.task.isin(base)])
        all_times.append(old_times[old_times.method.isin(names) & old_times.task.isin(base)])
        common["peers"] = []
        print(f"reusing {sorted(names)} from {args.reuse_peers}", flush=True)
    print(f"{len(jobs)} jobs on {args.jobs} worker(s), one thread each", flush=True)
    with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(run_job, *job, **common): job for job in jobs}
        for future in as_completed(futures):
            task, seed, _ = futures[future]
            rows, times, fold, seconds = future.result()
            all_rows.append(rows)
            all_times.append(times)
            print(f"{task} {fold} seed {seed}: {seconds:.0f} s", flush=True)
            pd.concat(all_rows).to_csv(args.out / "folds.csv", index=False)
            pd.concat(all_times).to_csv(args.out / "timings.csv", index=False)
    text = write_reports(pd.concat(all_rows), pd.concat(all_times), args.out)
    meta = {
        "seeds": args.seeds,
        "max_steps": args.max_steps,
        "width": args.width,
        "jobs": args.jobs,
        "bench_config": repr(config),
        "peers": sorted(peers),
        "peer_budget": args.peer_budget,
        "reused_peers_from": str(args.reuse_peers) if args.reuse_peers else None,
        "updated_tasks": base if args.update else None,
        "wall_s": time.perf_counter() - t_start,
        "python": sys.version.split()[0],
        "cpu": cpu_info(),
    }
    previous = args.out / "run.json"
    if args.update and previous.is_file():  # the first run's settings stay; updates are added
        first = json.loads(previous.read_text())
        first.setdefault("updates", []).append(meta)
        meta = first
    previous.write_text(json.dumps(meta, indent=1))
    print(text)


if __name__ == "__main__":
    main()
