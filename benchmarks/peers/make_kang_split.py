"""Write a Kang 2018 leave-one-cell-type-out split for the peer runners.

Held out: the stimulated cells of one cell type (default CD14+ Monocytes). Writes into OUT_DIR:

- ``train.h5ad``  all cells except the held-out stimulated ones (the scGen / CPA task)
- ``source.h5ad`` the held-out cell type's control cells (to be mapped to ``stim``)
- ``real.h5ad``   the held-out cell type's stimulated cells (ground truth; never given to a peer)
- ``split.json``  the keys and labels to pass to the runners

Every file has raw counts in ``layers['counts']`` and log-normalized values (each cell scaled
to 1e4 counts, then ``log1p``) as dense float32 in ``X``, with the same genes in the same order.
obs keeps ``group_id`` (ctrl/stim), ``cluster_id`` (cell type) and ``sample_id``.

Run with the main venv::

    export RNADIFF_DATA_DIR=../shared/data
    .venv/bin/python benchmarks/peers/make_kang_split.py /tmp/kang_cd14
    .venv/bin/python benchmarks/peers/make_kang_split.py /tmp/kang_b --held-out "B cells"
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

FILENAME = "kang2018_ifnb_pbmc_counts.h5ad"
PERTURBATION_KEY, CONTROL, TARGET, CELL_TYPE_KEY = "group_id", "ctrl", "stim", "cluster_id"
TARGET_SUM = 1e4


def log_normalize(counts) -> np.ndarray:
    """Dense float32 ``log1p(counts / total * 1e4)`` per cell."""
    x = np.asarray(counts.toarray() if sp.issparse(counts) else counts, dtype=np.float64)
    totals = x.sum(axis=1, keepdims=True)
    if (totals == 0).any():
        raise SystemExit(f"{int((totals == 0).sum())} cells have no counts")
    return np.log1p(x * (TARGET_SUM / totals)).astype(np.float32)


def _clean(a: ad.AnnData) -> ad.AnnData:
    counts = sp.csr_matrix(a.X, dtype=np.float32)
    obs = pd.DataFrame(
        {
            k: a.obs[k].astype(str).astype("category")
            for k in (CELL_TYPE_KEY, "sample_id", PERTURBATION_KEY)
        },
        index=a.obs_names.astype(str),
    )
    var = pd.DataFrame(
        {k: a.var[k].astype(str) for k in a.var.columns}, index=a.var_names.astype(str)
    )
    return ad.AnnData(X=log_normalize(counts), obs=obs, var=var, layers={"counts": counts})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--held-out", default="CD14+ Monocytes", help="cell type to hold out")
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
    adata = _clean(ad.read_h5ad(path))
    types = sorted(adata.obs[CELL_TYPE_KEY].unique())
    if args.held_out not in types:
        sys.exit(f"unknown cell type {args.held_out!r}; one of {types}")
    is_ct = (adata.obs[CELL_TYPE_KEY] == args.held_out).to_numpy()
    is_stim = (adata.obs[PERTURBATION_KEY] == TARGET).to_numpy()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    parts = {
        "train": adata[~(is_ct & is_stim)],
        "source": adata[is_ct & ~is_stim],
        "real": adata[is_ct & is_stim],
    }
    for name, part in parts.items():
        part.copy().write_h5ad(args.out_dir / f"{name}.h5ad")
    meta = {
        "dataset": FILENAME,
        "held_out": args.held_out,
        "perturbation_key": PERTURBATION_KEY,
        "control": CONTROL,
        "target": TARGET,
        "cell_type_key": CELL_TYPE_KEY,
        "n_cells": {k: int(v.n_obs) for k, v in parts.items()},
        "n_genes": int(adata.n_vars),
        "x": "log1p(counts / total * 1e4), dense float32; raw counts in layers['counts']",
    }
    (args.out_dir / "split.json").write_text(json.dumps(meta, indent=1))
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
