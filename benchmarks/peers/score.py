"""Score peer predictions against the real held-out cells with the project's own metrics.

Run with the main venv::

    .venv/bin/python benchmarks/peers/score.py SPLIT_DIR PRED.h5ad [PRED.h5ad ...] [--csv OUT.csv]

SPLIT_DIR is a folder from ``make_kang_split.py`` or ``make_papalexi_split.py``
(``train.h5ad``, ``source.h5ad``, ``real.h5ad``, ``split.json``). One row per prediction and
target: ``response_metrics(pred, real, source, top_n=(20, 100), distributional=True)`` on the
cells of that target (R² of means and Pearson delta on all / top-DE genes, E-distance, MMD, DE
overlap, ...), plus the peer's ``uns['peer']`` bookkeeping; extra prediction layers (e.g. CPA's
``nb_sample``) get rows of their own. Reference rows per target: the source cells unchanged
("control"), the additive baseline (source + mean over training contexts of mean(target) -
mean(control)), and the same additive baseline passed through a 50-component PCA of the
training cells and back ("additive, PCA-50 decoded": what decoding from CellFlow's PCA space
costs any method). With several targets, the printed table is the mean over targets; the CSV
has every row.
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

from rnadiff.evaluation._baselines import additive_baseline
from rnadiff.evaluation._metrics import response_metrics

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _contract import pca_basis, pca_roundtrip

N_PCS_REFERENCE = 50  # as run_cellflow.py
PRINTED = [
    "r2_mean_all",
    "r2_mean_top100",
    "pearson_delta_all",
    "pearson_delta_top100",
    "edistance",
    "mmd",
    "de_overlap_top100",
]


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32)


def split_meta(split_dir: Path) -> dict:
    """split.json with ``targets`` (a list) and ``context_key`` filled in for older splits."""
    meta = json.loads((split_dir / "split.json").read_text())
    meta.setdefault("targets", [meta["target"]] if "target" in meta else [])
    meta["context_key"] = meta.get("cell_type_key") or meta.get("batch_key")
    return meta


def context_shifts(train: ad.AnnData, meta: dict, target: str) -> list[np.ndarray]:
    pk, key = meta["perturbation_key"], meta["context_key"]
    contexts = train.obs[key].astype(str) if key else pd.Series("all", index=train.obs_names)
    pert = train.obs[pk].astype(str)
    out = []
    for ctx in sorted(set(contexts)):
        is_ctx = (contexts == ctx).to_numpy()
        ctrl = is_ctx & (pert == meta["control"]).to_numpy()
        stim = is_ctx & (pert == target).to_numpy()
        if ctrl.any() and stim.any():
            out.append(_dense(train.X[stim]).mean(0) - _dense(train.X[ctrl]).mean(0))
    return out


def _rows_of(a: ad.AnnData, pk: str, target: str) -> np.ndarray:
    return (a.obs[pk].astype(str) == target).to_numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("split_dir", type=Path)
    parser.add_argument("preds", type=Path, nargs="+")
    parser.add_argument("--csv", type=Path, default=None)
    args = parser.parse_args()
    meta = split_meta(args.split_dir)
    pk = meta["perturbation_key"]
    real = ad.read_h5ad(args.split_dir / "real.h5ad")
    source = ad.read_h5ad(args.split_dir / "source.h5ad")
    train = ad.read_h5ad(args.split_dir / "train.h5ad")
    x_src = _dense(source.X)
    targets = meta["targets"] or sorted(set(real.obs[pk].astype(str)))

    def metrics(x, target: str) -> dict:
        x_real = _dense(real.X[_rows_of(real, pk, target)])
        m = response_metrics(_dense(x), x_real, x_src, top_n=(20, 100), distributional=True)
        return {k: round(v, 4) for k, v in m.items()}

    rows = []
    for path in args.preds:
        pred = ad.read_h5ad(path)
        if list(pred.var_names) != list(real.var_names):
            raise SystemExit(f"{path}: genes differ from real.h5ad")
        peer = dict(pred.uns.get("peer", {}))
        conv = json.loads(peer.get("convergence", "{}") or "{}")
        base = {
            "peer": peer.get("name", path.stem),
            "version": peer.get("version"),
            "budget": peer.get("budget"),
            "epochs": peer.get("epochs"),
            "train_s": round(float(peer.get("train_s", np.nan)), 1),
            "predict_s": round(float(peer.get("predict_s", np.nan)), 1),
            "converged": conv.get("converged"),
            "loss_prev10": conv.get("prev10_mean"),
            "loss_last10": conv.get("last10_mean"),
        }
        layers = {"X": pred.X, **{f"layers[{k!r}]": pred.layers[k] for k in pred.layers}}
        for target in targets:
            sel = _rows_of(pred, pk, target)
            if not sel.any():
                raise SystemExit(f"{path}: no predicted cells for target {target!r}")
            for output, x in layers.items():
                rows.append({**base, "output": output, "target": target, **metrics(x[sel], target)})

    mean, axes = pca_basis(_dense(train.X), N_PCS_REFERENCE)
    for target in targets:
        ref = {"output": "reference", "target": target}
        rows.append({"peer": "control (source unchanged)", **ref, **metrics(x_src, target)})
        shifts = context_shifts(train, meta, target)
        if shifts:
            add = additive_baseline(x_src, shifts)
            rows.append({"peer": "additive baseline", **ref, **metrics(add, target)})
            add_pca = np.clip(pca_roundtrip(add, mean, axes), 0, None)
            rows.append(
                {
                    "peer": f"additive, PCA-{N_PCS_REFERENCE} decoded",
                    **ref,
                    **metrics(add_pca, target),
                }
            )
    df = pd.DataFrame(rows)
    info = ["budget", "epochs", "train_s", "predict_s", "converged"]
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        if len(targets) == 1:
            cols = ["peer", "output", *info, *PRINTED]
            print(df[[c for c in cols if c in df]].round(3).to_string(index=False))
        else:
            keys = ["peer", "output"]
            agg = df.groupby(keys, sort=False)[PRINTED].mean().round(3)
            first = df.groupby(keys, sort=False)[[c for c in info if c in df]].first()
            agg.insert(0, "n_targets", df.groupby(keys, sort=False).size())
            print(f"mean over {len(targets)} targets")
            print(first.join(agg).reset_index().to_string(index=False))
    if args.csv:
        df.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
