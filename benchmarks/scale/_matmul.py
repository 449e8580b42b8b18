"""The matmul peak: fp32 GFLOP/s of a square ``torch.mm`` at a thread count (fresh process).

    .venv/bin/python benchmarks/scale/_matmul.py --threads T --result result.json

The best of several timed repeats at each size (1024, 2048), so a moment of contention from
other work on the machine lowers the peak less; the largest figure is the peak.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def gflops(n: int, *, seconds: float = 1.0, repeats: int = 5) -> float:
    """Best GFLOP/s over ``repeats`` timed runs of ~``seconds`` each of an n x n fp32 mm."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)  # warm-up
    t0, calls = time.perf_counter(), 0
    while time.perf_counter() - t0 < 0.2:
        torch.mm(a, b, out=out)
        calls += 1
    per_run = max(1, int(calls * seconds / 0.2))
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(per_run):
            torch.mm(a, b, out=out)
        best = max(best, 2 * n**3 * per_run / (time.perf_counter() - t0) / 1e9)
    return best


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--result", type=Path, required=True)
    p.add_argument("--sizes", default="1024,2048")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    by_size = {int(n): gflops(int(n)) for n in args.sizes.split(",")}
    record = {
        "tool": "matmul",
        "status": "ok",
        "threads": args.threads,
        "gflops_by_size": by_size,
        "matmul_peak_gflops": max(by_size.values()),
        "torch_version": torch.__version__,
    }
    args.result.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    sys.exit(main())
