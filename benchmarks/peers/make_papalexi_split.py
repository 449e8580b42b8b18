"""Write a Papalexi 2021 (ECCITE-seq, THP-1) multi-target split for the peer runners.

Cells with a confident guide (``top_grna_frac > 0.8``) are kept. Of every label (each of the 25
knock-outs and ``non-targeting``) a seeded 20% of the cells is held out. Writes into OUT_DIR:

- ``train.h5ad``  the other 80% of every label (the peers train on all 25 knock-outs)
- ``source.h5ad`` the held-out non-targeting cells: the one source mapped to every knock-out
- ``real.h5ad``   the held-out cells of the knock-outs (ground truth; never given to a peer)
- ``split.json``  the keys and labels to pass to the runners (``targets``: all 25 knock-outs)

There is no cell-type column (one cell line); ``bio_rep`` (3 replicates) is the batch key.
Every file has raw counts in ``layers['counts']`` and log-normalized values (each cell scaled
to 1e4 counts, then ``log1p``) as dense float32 in ``X``, with the same genes in the same order.

Run with the main venv::

    export RNADIFF_DATA_DIR=../shared/data
    .venv/bin/python benchmarks/peers/make_papalexi_split.py /tmp/papalexi
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_kang_split import log_normalize

FILENAME = "papalexi2021_eccite_thp1_counts.h5ad"
PERTURBATION_KEY, CONTROL, BATCH_KEY = "top_grna_target", "non-targeting", "bio_rep"
MIN_GUIDE_FRACTION = 0.8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--held-out-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=None, help=f"path to {FILENAME}")
    args = parser.parse_args()
    path = args.data
    if path is None:
        data_dir = os.environ.get("RNADIFF_DATA_DIR")
        if not data_dir:
            sys.exit(f"set RNADIFF_DATA_DIR to the folder holding {FILENAME}, or pass --data")
        path = Path(data_dir) / FILENAME
    if not path.exists():
        sys.exit(f"{path} not found")
    raw = ad.read_h5ad(path)
    raw = raw[(raw.obs["top_grna_frac"] > MIN_GUIDE_FRACTION).to_numpy()]
    counts = sp.csr_matrix(raw.X, dtype=np.float32)
    obs = pd.DataFrame(
        {k: raw.obs[k].astype(str).astype("category") for k in (PERTURBATION_KEY, BATCH_KEY)},
        index=raw.obs_names.astype(str),
    )
    adata = ad.AnnData(
        X=log_normalize(counts),
        obs=obs,
        var=pd.DataFrame(index=raw.var_names.astype(str)),
        layers={"counts": counts},
    )

    rng = np.random.default_rng(args.seed)
    labels = adata.obs[PERTURBATION_KEY].astype(str).to_numpy()
    held = np.zeros(adata.n_obs, bool)
    for lab in sorted(set(labels)):  # sorted: the draws do not depend on the file's order
        idx = np.where(labels == lab)[0]
        n = round(args.held_out_fraction * len(idx))
        held[rng.choice(idx, size=n, replace=False)] = True
    is_ctrl = labels == CONTROL
    parts = {"train": adata[~held], "source": adata[held & is_ctrl], "real": adata[held & ~is_ctrl]}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        part.copy().write_h5ad(args.out_dir / f"{name}.h5ad")
    targets = sorted(set(labels) - {CONTROL})
    meta = {
        "dataset": FILENAME,
        "filter": f"top_grna_frac > {MIN_GUIDE_FRACTION}",
        "held_out_fraction": args.held_out_fraction,
        "seed": args.seed,
        "perturbation_key": PERTURBATION_KEY,
        "control": CONTROL,
        "targets": targets,
        "cell_type_key": None,
        "batch_key": BATCH_KEY,
        "n_cells": {k: int(v.n_obs) for k, v in parts.items()},
        "n_held_out_per_target": {t: int((held & (labels == t)).sum()) for t in targets},
        "n_genes": int(adata.n_vars),
        "x": "log1p(counts / total * 1e4), dense float32; raw counts in layers['counts']",
    }
    (args.out_dir / "split.json").write_text(json.dumps(meta, indent=1))
    print(json.dumps({k: v for k, v in meta.items() if k != "n_held_out_per_target"}))


if __name__ == "__main__":
    main()
