"""Score predictions with Arc Institute's cell-eval (the Virtual Cell Challenge's metrics).

Run with the cell-eval venv (``bash benchmarks/peers/install.sh celleval``). Three inputs:

``SPLIT_DIR PRED.h5ad [...]``
    a peer split folder (``make_kang_split.py``) and peer predictions: prints cell-eval's mean
    per metric per prediction.
``--arrays DIR``
    ``DIR/{pred,real,control}.npy`` (cells x genes, log-normalized), one perturbation: prints
    cell-eval's mean per metric as one JSON line (the test of the project's own metrics).
``--bundles FILE.npz [...] --csv OUT.csv``
    one file per benchmark split (written by ``benchmarks/_peers.py``): every method's
    predicted cells per evaluation, the real and control cells, and the training cells'
    perturbation means. Each method is scored by ``MetricsEvaluator`` (profile ``minimal``:
    ``pearson_delta``, ``mae``, ``mse``, ``discrimination_score_l1`` (PDS),
    ``overlap_at_N`` (DES), ``precision_at_N``), and so is the challenge's **cell-mean
    baseline**, built by cell-eval's own ``_build_pert_baseline`` (the mean over training
    perturbations of each perturbation's mean cell, the same vector for every perturbation).
    Each method's aggregate is then scaled against the baseline's by cell-eval's
    ``score_agg_metrics`` (``(x - base) / (1 - base)`` for metrics best at 1, ``1 - x / base``
    for those best at 0, clipped at 0), as the challenge does. Writes tidy rows ``task, fold,
    seed, method, metric, value`` (raw means and ``<metric>_scaled``).

Predicted and real cells are each put next to the same control cells. X must be log-normalized
in [0, 15) (every benchmark population is). With one perturbation per split (Kang) the
discrimination score is trivially 1.0.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

SKIP = ["pearson_edistance", "clustering_agreement"]  # need several perturbations
BASELINE = "baseline: cell mean (cell-eval)"
LOG1P_MAX = 15.0  # cell-eval's bound on log-normalized input


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32)


def _pair(cells: ad.AnnData, source: ad.AnnData, pk: str, target: str, control: str):
    x = np.vstack([_dense(cells.X), _dense(source.X)])
    labels = [target] * cells.n_obs + [control] * source.n_obs
    obs = pd.DataFrame({pk: pd.Categorical(labels)}, index=[f"c{i}" for i in range(len(labels))])
    return ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=source.var_names.copy()))


def _stack(blocks: dict[str, np.ndarray], control: np.ndarray, genes: list[str]) -> ad.AnnData:
    """Cells of every perturbation in ``blocks`` and the control cells, labelled in ``pert``."""
    x = np.vstack([*blocks.values(), control]).astype(np.float32)
    labels = [p for p, b in blocks.items() for _ in range(len(b))] + ["__control__"] * len(control)
    obs = pd.DataFrame({"pert": pd.Categorical(labels)}, index=[f"c{i}" for i in range(len(x))])
    return ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=genes))


def _evaluate(pred: ad.AnnData, real: ad.AnnData, *, threads: int, de_real=None):
    """cell-eval's aggregate (polars, ``statistic`` column first) and the real DE table."""
    from cell_eval import MetricsEvaluator

    with tempfile.TemporaryDirectory() as tmp:
        evaluator = MetricsEvaluator(
            adata_pred=pred,
            adata_real=real,
            de_real=de_real,
            control_pert="__control__",
            pert_col="pert",
            num_threads=threads,
            outdir=tmp,
        )
        _, agg = evaluator.compute(profile="minimal", skip_metrics=SKIP, write_csv=False)
    return agg, evaluator.de_comparison.real.data


def score_bundle(path: Path, *, threads: int) -> list[dict]:
    """Tidy rows of one benchmark split: raw means and scaled scores per method."""
    from cell_eval._baseline import _build_pert_baseline
    from cell_eval._score import score_agg_metrics

    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(data["meta"].tobytes().decode())
        arrays = {k: data[k] for k in data.files if k != "meta"}
    genes, evs = meta["genes"], meta["evaluations"]
    control = arrays["control"]
    real = _stack({e: arrays[f"real_{i}"] for i, e in enumerate(evs)}, control, genes)
    # the challenge's cell-mean baseline, built by cell-eval from the training perturbations
    train = ad.AnnData(
        X=arrays["train_means"].astype(np.float32),
        obs=pd.DataFrame(
            {"pert": pd.Categorical(meta["train_perts"])},
            index=[f"t{i}" for i in range(len(meta["train_perts"]))],
        ),
        var=pd.DataFrame(index=genes),
    )
    mean_cell = _build_pert_baseline(train, pert_col="pert", control_pert="__control__")
    methods = {
        BASELINE: {e: np.tile(mean_cell, (len(arrays[f"real_{i}"]), 1)) for i, e in enumerate(evs)}
    }
    for j, method in enumerate(meta["methods"]):
        blocks = {
            e: arrays[f"pred_{i}_{j}"] for i, e in enumerate(evs) if f"pred_{i}_{j}" in arrays
        }
        if len(blocks) == len(evs):  # scored only where it predicted every evaluation
            methods[method] = blocks
    rows, aggs, de_real = [], {}, None
    key = {k: meta[k] for k in ("task", "fold", "seed")}
    for method, blocks in methods.items():
        # cell-eval refuses log1p values >= 15 (it takes them for counts); a prediction's rare
        # extreme value is clipped just below, and how many were is a row of its own
        over = sum(int((b >= LOG1P_MAX).sum()) for b in blocks.values())
        blocks = {e: np.minimum(b, LOG1P_MAX - 1e-3) for e, b in blocks.items()}
        rows.append({**key, "method": method, "metric": "values_clipped_below_15", "value": over})
        agg, de_real = _evaluate(
            _stack(blocks, control, genes), real, threads=threads, de_real=de_real
        )
        aggs[method] = agg
        mean = agg.filter(agg["statistic"] == "mean").drop("statistic").to_dicts()[0]
        rows += [
            {**key, "method": method, "metric": m, "value": float(v)}
            for m, v in mean.items()
            if v is not None
        ]
    base = aggs[BASELINE].filter(aggs[BASELINE]["statistic"] == "mean").to_dicts()[0]
    for method, agg in aggs.items():
        scaled = score_agg_metrics(agg, aggs[BASELINE]).to_pandas()
        for m, v in zip(scaled["metric"], scaled["from_baseline"], strict=True):
            # a baseline already at the best value 1 (PDS with one perturbation) leaves the
            # scaled score undefined; cell-eval writes 0 for it, reported here as missing
            undefined = m in base and base[m] is not None and np.isclose(base[m], 1.0)
            value = float("nan") if undefined else float(v)
            rows.append({**key, "method": method, "metric": f"{m}_scaled", "value": value})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("split_dir", type=Path, nargs="?")
    parser.add_argument("preds", type=Path, nargs="*")
    parser.add_argument("--profile", default="full")
    parser.add_argument("--outdir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--arrays", type=Path, default=None, help="DIR/{pred,real,control}.npy")
    parser.add_argument("--bundles", type=Path, nargs="+", default=None)
    parser.add_argument("--csv", type=Path, default=None, help="with --bundles: tidy rows")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # cell-eval logs every step
    if args.bundles:
        rows = []
        for path in args.bundles:
            rows += score_bundle(path, threads=args.threads)
            print(f"cell-eval: {path.name}", file=sys.stderr, flush=True)
        pd.DataFrame(rows).to_csv(args.csv or sys.stdout, index=False)
        return
    if args.arrays is not None:
        x = {k: np.load(args.arrays / f"{k}.npy") for k in ("pred", "real", "control")}
        genes = [f"g{i}" for i in range(x["real"].shape[1])]
        agg, _ = _evaluate(
            _stack({"p": x["pred"]}, x["control"], genes),
            _stack({"p": x["real"]}, x["control"], genes),
            threads=args.threads,
        )
        mean = agg.filter(agg["statistic"] == "mean").drop("statistic").to_dicts()[0]
        print(json.dumps({k: v for k, v in mean.items() if v is not None}))
        return
    if args.split_dir is None or not args.preds:
        parser.error("give SPLIT_DIR PRED.h5ad [...], --arrays DIR or --bundles FILE.npz [...]")
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
            profile=args.profile, write_csv=args.outdir is not None, skip_metrics=SKIP
        )
        agg = agg.to_pandas()
        mean = agg[agg.iloc[:, 0] == "mean"].iloc[0, 1:]
        tables[name] = pd.to_numeric(mean, errors="coerce")
    df = pd.DataFrame(tables)
    with pd.option_context("display.max_rows", 200, "display.width", 200):
        print(df.round(4).to_string())


if __name__ == "__main__":
    main()
