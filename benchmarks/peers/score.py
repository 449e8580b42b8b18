"""Score peer predictions against the real held-out cells with the project's own metrics.

Run with the main venv::

    .venv/bin/python benchmarks/peers/score.py SPLIT_DIR PRED.h5ad [PRED.h5ad ...] [--csv OUT.csv]

SPLIT_DIR is a folder from ``make_kang_split.py`` (``train.h5ad``, ``source.h5ad``,
``real.h5ad``, ``split.json``). One row per prediction:
``response_metrics(pred.X, real.X, source.X, top_n=(20, 100))`` plus the peer's
``uns['peer']`` bookkeeping; extra prediction layers (e.g. CPA's ``nb_sample``) get rows of
their own. Two reference rows close the table: the source cells unchanged ("control") and
the additive baseline (source + mean over training cell types of mean(target) - mean(control)).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from rnadiff.evaluation._baselines import additive_baseline
from rnadiff.evaluation._metrics import response_metrics


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32)


def _shifts(train: ad.AnnData, meta: dict) -> list[np.ndarray]:
    pk, ck = meta["perturbation_key"], meta["cell_type_key"]
    out = []
    for ct in sorted(set(train.obs[ck].astype(str))):
        is_ct = (train.obs[ck].astype(str) == ct).to_numpy()
        ctrl = is_ct & (train.obs[pk].astype(str) == meta["control"]).to_numpy()
        stim = is_ct & (train.obs[pk].astype(str) == meta["target"]).to_numpy()
        if ctrl.any() and stim.any():
            out.append(_dense(train.X[stim]).mean(0) - _dense(train.X[ctrl]).mean(0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("split_dir", type=Path)
    parser.add_argument("preds", type=Path, nargs="+")
    parser.add_argument("--csv", type=Path, default=None)
    args = parser.parse_args()
    real = ad.read_h5ad(args.split_dir / "real.h5ad")
    source = ad.read_h5ad(args.split_dir / "source.h5ad")
    x_real, x_src = _dense(real.X), _dense(source.X)

    def metrics(x) -> dict:
        m = response_metrics(_dense(x), x_real, x_src, top_n=(20, 100))
        return {k: round(v, 4) for k, v in m.items()}

    rows = []
    for path in args.preds:
        pred = ad.read_h5ad(path)
        if list(pred.var_names) != list(real.var_names):
            raise SystemExit(f"{path}: genes differ from real.h5ad")
        peer = dict(pred.uns.get("peer", {}))
        base = {
            "peer": peer.get("name", path.stem),
            "version": peer.get("version"),
            "budget": peer.get("budget"),
            "epochs": peer.get("epochs"),
            "train_s": round(float(peer.get("train_s", np.nan)), 1),
            "predict_s": round(float(peer.get("predict_s", np.nan)), 1),
        }
        rows.append({**base, "output": "X", **metrics(pred.X)})
        for layer in pred.layers:
            rows.append({**base, "output": f"layers[{layer!r}]", **metrics(pred.layers[layer])})
    rows.append({"peer": "control (source unchanged)", "output": "reference", **metrics(x_src)})
    meta_path = args.split_dir / "split.json"
    if meta_path.exists() and (args.split_dir / "train.h5ad").exists():
        meta = json.loads(meta_path.read_text())
        shifts = _shifts(ad.read_h5ad(args.split_dir / "train.h5ad"), meta)
        rows.append(
            {
                "peer": "additive baseline",
                "output": "reference",
                **metrics(additive_baseline(x_src, shifts)),
            }
        )
    df = pd.DataFrame(rows)
    cols = [
        "peer",
        "output",
        "budget",
        "epochs",
        "train_s",
        "predict_s",
        "r2_mean_all",
        "r2_mean_top20",
        "r2_mean_top100",
        "pearson_delta_all",
        "pearson_delta_top100",
    ]
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(df[[c for c in cols if c in df]].round(3).to_string(index=False))
    if args.csv:
        df.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
