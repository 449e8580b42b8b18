"""The scale benchmark: rnadiff and scVI on synthetic count files of 10k to 1M cells.

    .venv/bin/python benchmarks/scale/measure.py [--sizes 10k,100k,1M,100k_20k] [--threads 1,2]
        [--steps 300] [--quick] [--out benchmarks/results/scale]

Per file and thread count, each measurement runs in a fresh process, one at a time, so its
peak RSS is its own (``wait4``'s ``ru_maxrss``, and the process's own VmHWM after training):

- rnadiff: ``rnadiff train ... --max-steps N --threads T --quiet`` (``--backed`` for files of
  100k cells and more when ``rnadiff train --help`` lists it), timed by phase, then
  ``generate`` of 20k cells (``_rnadiff_run.py``);
- scVI in its own venv (``make peers``) on the same file and steps (``_scvi_run.py``);
- the fp32 matmul peak at T threads (``_matmul.py``, at the start and the end; the best), and
  the training step's share of it (3 x the forward FLOPs of the denoiser's Linear layers per
  step over the step time).

Writes ``results.csv`` (one row per file, threads and tool; rows of an earlier run at other
sizes are kept), ``runs/*.json`` (each measurement's record, errors and tracebacks included),
``summary.md`` (a table per thread count with the issue's targets as PASS/FAIL) and
``readme_row.md``. A run that fails (memory, a data path not there yet) is recorded and the
next one goes on. ``--quick``: 10k and 100k, 100 steps, 2k sampled cells, no calibration,
into ``<out>/quick/``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

from _report import write_reports  # noqa: E402
from make_files import DEFAULT_DATA, SIZES, make_files, parse_sizes  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "scale"
SCVI_PYTHON = ROOT / ".peers" / "scvi" / "bin" / "python"
BACKED_FROM_CELLS = 100_000  # 'auto': files this large are opened backed when rnadiff can


def has_backed_option(python: str) -> bool:
    """Whether ``rnadiff train --help`` lists ``--backed``."""
    help_text = subprocess.run(
        [python, "-m", "rnadiff.cli", "train", "--help"],
        capture_output=True,
        text=True,
        env=os.environ | {"COLUMNS": "200", "TERM": "dumb", "NO_COLOR": "1"},
    ).stdout
    return "--backed" in help_text


def run_child(
    cmd: list[str], *, threads: int, log: Path, timeout_s: float, mem_limit_gb: float
) -> dict:
    """Run ``cmd`` in a fresh process with T threads and an address-space cap (a run that
    needs more fails with MemoryError instead of waking the OOM killer on a shared machine);
    returns its wall time, exit status and peak RSS (``wait4``)."""
    env = os.environ | {
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "PYTHONWARNINGS": "ignore",
    }
    cap = int(mem_limit_gb * 2**30)

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
            preexec_fn=limit, start_new_session=True,
        )  # fmt: skip
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > timeout_s and not timed_out:
                os.killpg(proc.pid, signal.SIGKILL)
                timed_out = True
            time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "wall_s": time.perf_counter() - t0,
        "exit_code": proc.returncode,
        "timed_out": timed_out,
        "peak_rss_wait4_mib": usage.ru_maxrss / 1024,  # KiB on Linux
        # CPU seconds over wall seconds: about T when the run had its T cores to itself
        "cpu_per_wall": (usage.ru_utime + usage.ru_stime) / (time.perf_counter() - t0),
    }


def measure_one(kind: str, cmd: list[str], result: Path, args, threads: int) -> dict:
    """One measurement: the child's own record merged with what the parent saw."""
    result.unlink(missing_ok=True)
    load = os.getloadavg()[0]
    log = args.logs / (result.stem + ".log")
    seen = run_child(
        cmd, threads=threads, log=log, timeout_s=args.timeout_s, mem_limit_gb=args.mem_limit_gb
    )
    record = json.loads(result.read_text()) if result.is_file() else {"tool": kind}
    if seen["exit_code"] != 0 and record.get("status") not in ("failed",):
        tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.is_file() else []
        why = "timed out" if seen["timed_out"] else f"exit code {seen['exit_code']}"
        record["status"] = "failed"
        record["error"] = record.get("error") or f"{why}: {' | '.join(tail)}"[:500]
    record |= seen | {"threads": threads, "loadavg_1min_before": load}
    if record.get("peak_rss_mib") is None:
        record["peak_rss_mib"] = seen["peak_rss_wait4_mib"]
    return record


def matmul_peak(args, threads: int, tag: str) -> dict:
    result = args.runs / f"matmul_t{threads}_{tag}.json"
    cmd = [sys.executable, str(HERE / "_matmul.py"), "--threads", str(threads)]
    return measure_one("matmul", [*cmd, "--result", str(result)], result, args, threads)


def code_version() -> str:
    """The commit measured, with '+dirty' when src/ has uncommitted changes (work in progress)."""
    git = lambda *a: subprocess.run(  # noqa: E731
        ["git", *a], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    dirty = git("status", "--porcelain", "--", "src")
    return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")


def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default=",".join(SIZES), help=f"of {', '.join(SIZES)}")
    p.add_argument("--threads", default="1,2", help="thread counts, e.g. 1,2")
    p.add_argument("--steps", type=int, default=300, help="training steps of each run")
    p.add_argument("--sample-cells", type=int, default=20_000)
    p.add_argument("--quick", action="store_true", help="10k and 100k, 100 steps, 2k sampled")
    p.add_argument(
        "--calibration",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rnadiff's calibration after training (default: on; off in --quick)",
    )
    p.add_argument(
        "--backed",
        choices=["auto", "all", "none", "default"],
        default="auto",
        help="rnadiff reads the file backed: files of >= 100k cells, every file, none, or "
        "as 'rnadiff train' decides by itself (default)",
    )
    p.add_argument("--scvi", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--scvi-python", type=Path, default=SCVI_PYTHON)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="cache of the count files")
    p.add_argument("--out", type=Path, default=None, help=f"default {DEFAULT_OUT}")
    p.add_argument("--mem-limit-gb", type=float, default=12.0, help="address space per run")
    p.add_argument("--timeout-s", type=float, default=5400.0, help="per measurement")
    p.add_argument("--fresh", action="store_true", help="forget the rows of earlier runs")
    p.add_argument(
        "--report-only", action="store_true", help="rewrite summary.md etc. from results.csv"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = "10k,100k" if args.sizes == p.get_default("sizes") else args.sizes
        args.steps = 100 if args.steps == p.get_default("steps") else args.steps
        args.sample_cells = 2000 if args.sample_cells == 20_000 else args.sample_cells
        args.calibration = False if args.calibration is None else args.calibration
    args.calibration = True if args.calibration is None else args.calibration
    args.out = args.out or (DEFAULT_OUT / "quick" if args.quick else DEFAULT_OUT)
    args.runs, args.logs = args.out / "runs", args.data / "logs"
    args.thread_counts = [int(t) for t in args.threads.split(",") if t.strip()]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.report_only:
        info = json.loads((args.out / "run.json").read_text())
        write_reports(args.out, pd.read_csv(args.out / "results.csv"), pd.DataFrame(), info)
        return
    sizes = parse_sizes(args.sizes)
    for folder in (args.out, args.runs, args.logs):
        folder.mkdir(parents=True, exist_ok=True)
    paths = make_files(sizes, args.data)
    backed_ok = has_backed_option(sys.executable)
    scvi_ok = args.scvi and args.scvi_python.is_file()
    csv = args.out / "results.csv"
    old = pd.read_csv(csv) if csv.is_file() and not args.fresh else pd.DataFrame()
    rows: list[dict] = []
    run_info = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "steps": args.steps,
        "sample_cells": args.sample_cells,
        "calibration": args.calibration,
        "rnadiff_has_backed": backed_ok,
        "scvi": "yes" if scvi_ok else f"not run ({args.scvi_python} missing or --no-scvi)",
        "mem_limit_gb": args.mem_limit_gb,
        "rnadiff_code_at_start": code_version(),
    }

    def save(record: dict, size: str) -> None:
        stamp = {"size": size, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}
        stamp |= {"rnadiff_code": code_version()}
        rows.append(stamp | {k: v for k, v in record.items() if k != "traceback"})
        name = f"{size}_t{record['threads']}_{record['tool']}.json"
        (args.runs / name).write_text(json.dumps(record, indent=1, default=str))
        write_reports(args.out, old, pd.DataFrame(rows), run_info)
        print(
            f"[measure] {size} t{record['threads']} {record['tool']}: {record.get('status')}"
            + (f" ({record.get('error')})" if record.get("error") else "")
            + "".join(
                f", {k} {record[k]:.4g}"
                for k in ("train_cells_per_s", "peak_rss_mib", "matmul_peak_gflops")
                if isinstance(record.get(k), int | float)
            ),
            flush=True,
        )

    peaks = {t: matmul_peak(args, t, "start") for t in args.thread_counts}
    for record in peaks.values():  # replaced by the best of start and end at the end
        save(dict(record), "all")
    for size in sizes:
        path = paths[size.name]
        backed = args.backed == "all" or (
            args.backed == "auto" and size.n_cells >= BACKED_FROM_CELLS
        )
        for t in args.thread_counts:
            model_dir = args.data / "models" / f"{size.name}_t{t}"
            subprocess.run(["rm", "-rf", str(model_dir)], check=True)
            result = args.runs / f"{size.name}_t{t}_rnadiff.json"
            cmd = [sys.executable, str(HERE / "_rnadiff_run.py"), "--data", str(path)]
            cmd += ["--out", str(model_dir), "--steps", str(args.steps), "--threads", str(t)]
            cmd += ["--result", str(result), "--sample-cells", str(args.sample_cells)]
            # the command's own --backed / --in-memory when it has them, else the harness opens
            # the file backed itself; 'default': whatever the command decides
            if backed_ok and args.backed != "default":
                cmd += ["--backed" if backed else "--in-memory"]
            elif backed:
                cmd += ["--open-backed"]
            cmd += ["--no-calibration"] * (not args.calibration)
            record = measure_one("rnadiff", cmd, result, args, t)
            record |= {"n_cells": size.n_cells, "n_genes": size.n_genes}
            record["backed"] = backed if args.backed != "default" else "command's choice"
            save(record, size.name)
            subprocess.run(["rm", "-rf", str(model_dir)], check=True)
            if not scvi_ok:
                continue
            result = args.runs / f"{size.name}_t{t}_scvi.json"
            cmd = [str(args.scvi_python), str(HERE / "_scvi_run.py"), "--data", str(path)]
            cmd += ["--steps", str(args.steps), "--threads", str(t), "--result", str(result)]
            record = measure_one("scvi", cmd + ["--backed"] * backed, result, args, t)
            record |= {"n_cells": size.n_cells, "n_genes": size.n_genes}
            save(record, size.name)
    for t in args.thread_counts:
        end = matmul_peak(args, t, "end")
        start = peaks[t]
        best = max(start.get("matmul_peak_gflops") or 0, end.get("matmul_peak_gflops") or 0)
        save(
            start
            | {"matmul_start_gflops": start.get("matmul_peak_gflops")}
            | {"matmul_end_gflops": end.get("matmul_peak_gflops")}
            | {"matmul_peak_gflops": best or None},
            "all",
        )
    run_info["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_reports(args.out, old, pd.DataFrame(rows), run_info)
    print(f"[measure] wrote {args.out}/results.csv, summary.md, readme_row.md", flush=True)


if __name__ == "__main__":
    sys.exit(main())
