"""Three networks (``n_models=3``) on the benchmark's Kang folds, with ``compose`` placing the
contexts by the network's estimate (the default) or by the training control means (``"data"``;
``studies/context_profiles``; the engine's ``context_profiles`` setting): one model per
split, both rules.

    python outer_rules.py SEED [FOLD,...]   (rows appended to rows_outer_rules.csv)
"""

import sys
from pathlib import Path

import pandas as pd
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # benchmarks/
sys.path.insert(0, str(HERE.parent / "context_profiles"))
import _nested  # noqa: E402
import nested  # noqa: E402

from rnadiff import ModelConfig, NetworkConfig  # noqa: E402
from rnadiff.evaluation._benchmark import BenchConfig  # noqa: E402


def main(seed: int, only: list[str] | None) -> None:
    torch.set_num_threads(1)
    config = BenchConfig(model=ModelConfig(network=NetworkConfig(n_models=3)))
    for fold, split in _nested._outer_splits(seed).items():
        if only and fold not in only:
            continue
        rows = nested.both(split, "outer", fold, config)
        out = HERE / "rows_outer_rules.csv"
        pd.DataFrame(rows).to_csv(out, mode="a", header=not out.exists(), index=False)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2].split(",") if len(sys.argv) > 2 else None)
