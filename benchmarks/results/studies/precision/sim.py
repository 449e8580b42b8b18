"""``studies/batch/sim.py``'s measurement at a given training precision (issue 25).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/results/studies/precision/sim.py PRECISION
        WORLD BATCH

``PRECISION``: ``fp32`` or ``bf16`` (``TrainConfig.precision``); the rest as ``batch/sim.py``
(a simulated screen of 40,000 cells, its conditions scored against fresh cells of the truth).
Prints one JSON line and appends it to ``sim.csv`` beside this file.
"""

import json
import runpy
import sys
from pathlib import Path

import pandas as pd

from rnadiff import RNADiffusion, TrainConfig

HERE = Path(__file__).resolve().parent
precision, world, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
train = RNADiffusion.train


def at_precision(self, **kwargs):
    return train(self, **kwargs, config=TrainConfig(precision=precision))


RNADiffusion.train = at_precision
study = runpy.run_path(str(HERE.parent / "batch" / "sim.py"), run_name="study")
record = study["main"](world, batch) | {"precision": precision}
print(json.dumps(record))
csv = HERE / "sim.csv"
old = pd.read_csv(csv) if csv.is_file() else pd.DataFrame()
pd.concat([old, pd.DataFrame([record])], ignore_index=True).to_csv(csv, index=False)
