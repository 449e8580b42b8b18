"""Cross-check peer predictions with Arc Institute's cell-eval (Virtual Cell Challenge metrics).

Run with the cell-eval venv (``bash benchmarks/peers/install.sh celleval``)::

    .peers/celleval/bin/python benchmarks/peers/celleval_score.py SPLIT_DIR PRED.h5ad [...] \\
        [--profile full] [--outdir DIR]

For each prediction, cell-eval compares ``pred + source`` (predicted target cells next to the
real control cells of the held-out context) with ``real + source``, with the perturbation column
and labels from ``SPLIT_DIR/split.json``. Prints cell-eval's aggregated table (mean per metric)
per prediction. With a single perturbation the discrimination scores are trivially 1.0; the
useful columns are the DE overlap / direction / correlation metrics and the expression errors.
X must be log-normalized in [0, 15) (the split and every runner write that).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32)


def _pair(cells: ad.AnnData, source: ad.AnnData, pk: str, target: str, control: str):
    x = np.vstack([_dense(cells.X), _dense(source.X)])
    labels = [target] * cells.n_obs + [control] * source.n_obs
    obs = pd.DataFrame({pk: pd.Categorical(labels)}, index=[f"c{i}" for i in range(len(labels))])
    return ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=source.var_names.copy()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("split_dir", type=Path)
    parser.add_argument("preds", type=Path, nargs="+")
    parser.add_argument("--profile", default="full")
    parser.add_argument("--outdir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    from cell_eval import MetricsEvaluator

    meta = json.loads((args.split_dir / "split.json").read_text())
    pk, control, target = meta["perturbation_key"], meta["control"], meta["target"]
    real = ad.read_h5ad(args.split_dir / "real.h5ad")
    source = ad.read_h5ad(args.split_dir / "source.h5ad")
    adata_real = _pair(real, source, pk, target, control)
    tables = {}
    for path in args.preds:
        pred = ad.read_h5ad(path)
        name = dict(pred.uns.get("peer", {})).get("name", path.stem)
        adata_pred = _pair(pred, source, pk, target, control)
        outdir = args.outdir / name if args.outdir else Path(tempfile.mkdtemp()) / name
        evaluator = MetricsEvaluator(
            adata_pred=adata_pred,
            adata_real=adata_real,
            control_pert=control,
            pert_col=pk,
            num_threads=args.threads,
            outdir=str(outdir),
        )
        _results, agg = evaluator.compute(
            profile=args.profile,
            write_csv=args.outdir is not None,
            # need two or more perturbations; undefined with a single one
            skip_metrics=["pearson_edistance", "clustering_agreement"],
        )
        agg = agg.to_pandas()
        mean = agg[agg.iloc[:, 0] == "mean"].iloc[0, 1:]
        tables[name] = pd.to_numeric(mean, errors="coerce")
    df = pd.DataFrame(tables)
    with pd.option_context("display.max_rows", 200, "display.width", 200):
        print(df.round(4).to_string())


if __name__ == "__main__":
    main()
