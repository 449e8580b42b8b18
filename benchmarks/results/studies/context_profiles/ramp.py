"""Round 2: with contexts placed by their training control means, which near end of the
``compose`` scale's ramp? ``s = near + (far - near) * min(1, r)`` (``far`` 1.5 as now; the
default's ``near`` is 1, chosen on the network's distances). Candidates: the default (network
estimate, near 1), training means with near 1, 1.15 and 1.3; nested on Kang's inner folds as
``nested.py`` (one trained model per fold, every candidate; the near end set by replacing the
scale function of ``rnadiff.sampling._transfer_plan`` for the run).

    python ramp.py SEED [FOLD,...]   (rows appended to rows_ramp.csv)
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # benchmarks/
import _nested  # noqa: E402

sys.path.insert(0, str(HERE))
import nested  # noqa: E402

import rnadiff.sampling._transfer_plan as plan  # noqa: E402
from rnadiff.data import _splits as splits  # noqa: E402

CANDIDATES = (("network", 1.0), ("data", 1.0), ("data", 1.15), ("data", 1.3))


def ramp(near: float):
    def scale(relative, far):
        r = np.clip(np.nan_to_num(np.asarray(relative, dtype=float), nan=1.0), 0.0, 1.0)
        return near + (far - near) * r

    return scale


def set_near(near: float) -> None:
    plan.distance_transfer_scale = ramp(near)


def every(split, level: str, outer: str) -> list[dict]:
    return nested.both(split, level, outer, rules=CANDIDATES, set_near=set_near)


def main(seed: int, only: list[str] | None) -> None:
    torch.set_num_threads(1)
    for outer, outer_split in _nested._outer_splits(seed).items():
        if only and outer not in only:
            continue
        rows = []
        for split in splits.kang_loo_celltype(outer_split.train, seed=seed):
            if split.fold != outer:
                rows += every(split, "inner", outer)
        rows += every(outer_split, "outer", outer)
        out = HERE / "rows_ramp.csv"
        pd.DataFrame(rows).to_csv(out, mode="a", header=not out.exists(), index=False)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2].split(",") if len(sys.argv) > 2 else None)
