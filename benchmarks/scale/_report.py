"""The scale benchmark's reports: ``results.csv``, ``summary.md`` and ``readme_row.md``.

Targets (issue "Scale: a million cells on one machine"), checked per thread count:
1M x 2k peak RSS <= 1.5x the 10k run's and < 3 GiB; 1M training cells/s within 20% of the
10k run's; training cells/s >= 2x scVI's on the same file; 100k x 20k genes trains in
< 4 GiB; a training step >= 60% of the matmul peak at the default batch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

KEY = ["size", "threads", "tool"]
COLUMNS = [
    *KEY,
    "n_cells", "n_genes", "status", "error", "backed", "backed_via", "mode", "n_genes_modelled",
    "read_s", "init_s", "data_to_loop_s", "preprocess_s", "steps", "batch_size", "precision",
    "train_s", "train_cells_per_s", "step_ms", "calibrate_s", "checkpoint_s", "save_s",
    "peak_rss_train_mib", "peak_rss_mib", "peak_rss_wait4_mib", "sample_cells", "sample_s",
    "sample_cells_per_s", "forward_gflop", "step_gflop", "linear_layers", "step_gflops",
    "matmul_peak_gflops", "matmul_start_gflops", "matmul_end_gflops", "step_share_of_peak",
    "train_cpu_per_wall", "wall_s", "cpu_per_wall", "loadavg_1min_before", "measured_at",
    "rnadiff_code", "exit_code", "timed_out", "flops_error", "sampling_error", "backed_error",
    "timers_missing", "command",
]  # fmt: skip
NOTE = (
    "Produced by `benchmarks/scale/measure.py` (`make bench-scale`). Each measurement ran alone "
    "in a fresh process; the 2 cores may be shared with other work (`loadavg_1min_before` in "
    "results.csv), which lowers the 2-thread figures most. CPU/wall: the training loop's CPU "
    "seconds over its wall seconds, about T when it had T cores to itself. Peak RSS train: the "
    "process's VmHWM after training (before sampling); peak RSS: the whole run with sampling. "
    "% matmul peak: 3 x the forward FLOPs of the denoiser's Linear layers per step over the step "
    "time, over the best fp32 square `torch.mm` at the same thread count. Cells per CPU s: "
    "training cells/s over CPU/wall, the loop's cells per CPU second; on a shared machine the "
    "closer figure to what the code does with a core to itself (1 thread). Batch: each tool's "
    "default minibatch (rnadiff's follows the data, `TrainConfig.batch_for`: 128 below 34,134 "
    "cells, 512 above; scVI's is 128; `(bf16)`: rnadiff's step autocast to bf16, "
    "`TrainConfig.precision_for`, whose % matmul peak is still against the fp32 peak); the "
    "rows of a file measured in an earlier run keep "
    "that run's code (`rnadiff_code` in results.csv)."
)
ORDER = ["10k", "100k", "1M", "100k_20k"]
GIB = 1024.0  # MiB


def merge(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Rows of both, the newer one kept per (size, threads, tool); shares recomputed."""
    df = pd.concat([old, new], ignore_index=True) if len(old) else new.copy()
    df = df.drop_duplicates(KEY, keep="last").reset_index(drop=True)
    for col in COLUMNS:
        if col not in df:
            df[col] = None
    peaks = df[df.tool == "matmul"].set_index("threads")["matmul_peak_gflops"]
    mine = df.tool == "rnadiff"
    step_gflops = pd.to_numeric(df["step_gflop"], errors="coerce") / (
        pd.to_numeric(df["step_ms"], errors="coerce") / 1000
    )
    df.loc[mine, "step_gflops"] = step_gflops[mine]
    df.loc[mine, "matmul_peak_gflops"] = df.loc[mine, "threads"].map(peaks)
    df.loc[mine, "step_share_of_peak"] = step_gflops[mine] / pd.to_numeric(
        df.loc[mine, "matmul_peak_gflops"], errors="coerce"
    )
    rank = {s: i for i, s in enumerate(ORDER)}
    df["_order"] = df["size"].map(lambda s: rank.get(s, len(ORDER)))
    df = df.sort_values(["_order", "threads", "tool"]).drop(columns="_order")
    return df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]


def _num(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def _fmt(x, digits: int = 0, scale: float = 1.0) -> str:
    x = _num(x)
    return "-" if x is None else f"{x / scale:,.{digits}f}"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def _row(df: pd.DataFrame, size: str, threads: int, tool: str) -> dict | None:
    hit = df[(df["size"] == size) & (df.threads == threads) & (df.tool == tool)]
    return None if hit.empty else hit.iloc[-1].to_dict()


def _trained(r: dict | None) -> bool:
    return r is not None and r.get("status") in ("ok", "trained")


def _per_cpu(r: dict | None) -> float | None:
    """Training cells per CPU second of the loop: on a shared machine, what the wall-clock
    figure would be with the cores to itself (contention costs cache too, so a lower bound)."""
    if not _trained(r):
        return None
    cps, cpu = _num(r.get("train_cells_per_s")), _num(r.get("train_cpu_per_wall"))
    return cps / cpu if cps and cpu else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _vs_scvi(mine: dict | None, scvi: dict | None) -> tuple[float | None, bool | None]:
    if not _trained(mine) or not _trained(scvi):
        return None, (False if mine is not None and not _trained(mine) else None)
    a, b = _num(mine.get("train_cells_per_s")), _num(scvi.get("train_cells_per_s"))
    return (a / b, a >= 2 * b) if a and b else (None, None)


def targets(df: pd.DataFrame, t: int) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) rows for thread count ``t``."""
    small, big = _row(df, "10k", t, "rnadiff"), _row(df, "1M", t, "rnadiff")
    wide = _row(df, "100k_20k", t, "rnadiff")
    out = []
    rss_s = _num(small and small.get("peak_rss_train_mib"))
    rss_b = _num(big and big.get("peak_rss_train_mib")) if _trained(big) else None
    ok = (
        None
        if big is None or rss_s is None
        else (_trained(big) and rss_b is not None and rss_b <= 1.5 * rss_s and rss_b < 3 * GIB)
    )
    out.append(("1M x 2k: peak RSS <= 1.5x the 10k run's and < 3 GiB",
                f"{_fmt(rss_b, 2, GIB)} GiB vs 10k {_fmt(rss_s, 2, GIB)} GiB"
                + ("" if _trained(big) or big is None else f" ({big.get('error')})"),
                _verdict(ok)))  # fmt: skip
    cps_s = _num(small and small.get("train_cells_per_s"))
    cps_b = _num(big and big.get("train_cells_per_s")) if _trained(big) else None
    ok = None if big is None or cps_s is None else (cps_b is not None and cps_b >= 0.8 * cps_s)
    out.append(("1M x 2k: training cells/s within 20% of the 10k run's",
                f"{_fmt(cps_b)} vs 10k {_fmt(cps_s)}", _verdict(ok)))  # fmt: skip
    for size in ORDER:
        ratio, ok = _vs_scvi(_row(df, size, t, "rnadiff"), _row(df, size, t, "scvi"))
        if _row(df, size, t, "rnadiff") is not None:
            out.append((f"{size}: training cells/s >= 2x scVI's", f"{_fmt(ratio, 2)}x",
                        _verdict(ok)))  # fmt: skip
    rss_w = _num(wide and wide.get("peak_rss_train_mib")) if _trained(wide) else None
    ok = None if wide is None else (rss_w is not None and rss_w < 4 * GIB)
    out.append(("100k x 20k genes: trains in < 4 GiB",
                f"{_fmt(rss_w, 2, GIB)} GiB" + ("" if _trained(wide) or wide is None
                                                  else f" ({wide.get('error')})"),
                _verdict(ok)))  # fmt: skip
    for size in ORDER:
        r = _row(df, size, t, "rnadiff")
        if r is None:
            continue
        share = _num(r.get("step_share_of_peak"))
        ok = (share >= 0.6) if share is not None else (False if not _trained(r) else None)
        bf16 = r.get("precision") == "bf16"  # its products run at the bf16 peak, not measured
        verdict = "n/a: a bf16 step against the fp32 peak" if bf16 else _verdict(ok)
        out.append((f"{size}: training step >= 60% of the matmul peak",
                    f"{_fmt(share and 100 * share)}% ({_fmt(r.get('step_gflops'), 1)} of "
                    f"{_fmt(r.get('matmul_peak_gflops'), 1)} GFLOP/s)", verdict))  # fmt: skip
    return out


def _precision(r) -> str:
    """`` (bf16)`` for a run that autocast to bf16 (``TrainConfig.precision``), else nothing."""
    return " (bf16)" if r.get("precision") == "bf16" else ""


def table(df: pd.DataFrame, t: int) -> list[str]:
    head = ["file", "cells x genes (modelled)", "rnadiff", "read s", "preprocess s",
            "batch rnadiff, scVI", "train cells/s", "step ms", "% matmul peak",
            "peak RSS train GiB", "peak RSS GiB", "sample cells/s", "scVI cells/s",
            "scVI peak RSS GiB", "rnadiff / scVI", "CPU/wall rnadiff, scVI",
            "cells per CPU s rnadiff, scVI", "rnadiff / scVI per CPU s"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for size in ORDER:
        r, s = _row(df, size, t, "rnadiff"), _row(df, size, t, "scvi")
        if r is None:
            continue
        ratio, _ = _vs_scvi(r, s)
        share = _num(r.get("step_share_of_peak"))
        status = r.get("status") if _trained(r) else f"{r.get('status')}: {r.get('error')}"
        via = r.get("backed_via")
        status += f" (backed, via {via})" if isinstance(via, str) and via else ""
        cells = f"{int(r['n_cells']):,} x {int(r['n_genes']):,} ({_fmt(r.get('n_genes_modelled'))})"
        scvi_rss = (
            "-"
            if s is None
            else _fmt(s.get("peak_rss_mib"), 2, GIB)
            + (f" ({s.get('mode')})" if s.get("mode") else "")
        )
        scvi_cps = "-" if s is None else (
            _fmt(s.get("train_cells_per_s")) if _trained(s) else f"failed: {s.get('error')}"
        )  # fmt: skip
        cols = [size, cells, status, _fmt(r.get("read_s"), 1), _fmt(r.get("preprocess_s"), 1),
                f"{_fmt(r.get('batch_size'))}{_precision(r)}, {_fmt(s and s.get('batch_size'))}",
                _fmt(r.get("train_cells_per_s")), _fmt(r.get("step_ms"), 1),
                _fmt(share and 100 * share), _fmt(r.get("peak_rss_train_mib"), 2, GIB),
                _fmt(r.get("peak_rss_mib"), 2, GIB), _fmt(r.get("sample_cells_per_s")),
                scvi_cps, scvi_rss, _fmt(ratio, 2),
                f"{_fmt(r.get('train_cpu_per_wall'), 2)}, "
                f"{_fmt(s and s.get('train_cpu_per_wall'), 2)}",
                f"{_fmt(_per_cpu(r))}, {_fmt(_per_cpu(s))}",
                _fmt(_ratio(_per_cpu(r), _per_cpu(s)), 2)]  # fmt: skip
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cols) + " |")
    return lines


def summary(df: pd.DataFrame, info: dict) -> str:
    lines = ["# Scale benchmark", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += ["", NOTE, ""]
    threads = sorted({int(t) for t in df.threads.dropna().unique()})
    for t in threads:
        mm = _row(df, "all", t, "matmul")
        peak = _fmt(mm and mm.get("matmul_peak_gflops"), 1)
        lines += [f"## {t} thread{'s' * (t > 1)} (matmul peak {peak} GFLOP/s)", ""]
        lines += [*table(df, t), "", "| target | measured | verdict |", "|---|---|---|"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in targets(df, t)] + [""]
    return "\n".join(lines) + "\n"


def readme_row(df: pd.DataFrame) -> str:
    """One Markdown row for the README: the 1M-cell run (else the largest trained file)."""
    parts = []
    for t in sorted({int(t) for t in df.threads.dropna().unique()}):
        for size in ("1M", "100k", "10k"):
            r = _row(df, size, t, "rnadiff")
            if _trained(r):
                ratio, _ = _vs_scvi(r, _row(df, size, t, "scvi"))
                rss = _fmt(r.get("peak_rss_train_mib"), 2, GIB)
                share = _fmt(100 * (_num(r.get("step_share_of_peak")) or 0))
                parts.append(
                    f"{size} x 2k, {t} thr: {_fmt(r.get('train_cells_per_s'))} cells/s "
                    f"({_fmt(ratio, 1)}x scVI), peak RSS {rss} GiB, step {share}% of matmul"
                )
                break
    wide = _row(df, "100k_20k", min(df.threads.dropna().astype(int), default=1), "rnadiff")
    w = (
        f"100k x 20k: {_fmt(wide.get('peak_rss_train_mib'), 2, GIB)} GiB"
        if _trained(wide)
        else "100k x 20k: not trained"
    )
    return f"| scale (`make bench-scale`) | {'; '.join(parts) or 'no run trained'}; {w} |\n"


def write_reports(out: Path, old: pd.DataFrame, new: pd.DataFrame, info: dict) -> pd.DataFrame:
    df = merge(old, new)
    df.to_csv(out / "results.csv", index=False)
    (out / "summary.md").write_text(summary(df, info))
    (out / "readme_row.md").write_text(readme_row(df))
    (out / "run.json").write_text(json.dumps(info, indent=1))
    return df
