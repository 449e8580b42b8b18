"""Cross-check rnadiff's response metrics against Arc Institute's cell-eval (Kang, Papalexi).

For a few Kang 2018 leave-one-cell-type-out folds (default: CD4 T cells and B cells, seed 0)
this script predicts the held-out stimulated cells with rnadiff (counterfactual) and with the
additive baseline, exactly as ``benchmarks/run.py`` does (same split, genes, preprocessing and
training settings), scores each prediction with rnadiff's own
``rnadiff.evaluation._metrics.response_metrics`` and, in the cell-eval venv, with
``benchmarks/peers/celleval_score.py`` (``cell_eval.MetricsEvaluator``, profile ``full``) on
the very same log-normalized arrays. Both sides use the held-out cell type's real control
cells as the control.

Pairs compared (``metric`` = rnadiff's key, ``celleval_metric`` = cell-eval's column):

- ``pearson_delta_all`` / ``pearson_delta``: the same definition (Pearson r of the change of
  gene means from the control, predicted vs real, all genes, log space); they should agree
  to float32 precision.
- ``mse_mean`` / ``mse`` and ``mse_delta``: the same definition (mean over genes of the squared
  error of the gene means). The control is the same cells on both sides, so cell-eval's
  ``mse_delta`` equals its ``mse``.
- ``de_overlap_top100`` / ``overlap_at_100``: both the overlap of the predicted and real top-100
  DE genes against the control, but ranked differently: rnadiff ranks all genes by |Wilcoxon
  z|; cell-eval (pdex) keeps genes with Mann-Whitney BH FDR < 0.05 and ranks them by
  |log2 fold change| of ``expm1(mean log)`` pseudobulks, dividing by min(100, real
  significant genes). The values differ, and so can the order of methods: on Kang the
  additive baseline (every cell shifted, few zeros left) ranks poorly by |z| but well by
  |log2FC|, rnadiff the other way round.
- ``direction_agreement_top100`` / ``de_direction_match``: the same per-gene test (the sign of
  the change; pdex's log2 fold change of ``expm1(mean log)`` has the sign of the change of
  mean log values) on different genes: rnadiff's top-100 real DE genes, cell-eval's real
  genes with FDR < 0.05.
- ``direction_agreement_celleval_genes`` / ``de_direction_match``: rnadiff's direction test
  run on cell-eval's own gene set (read from its ``real_de.csv``), which isolates the gene-set
  difference; it should agree up to genes with no change or an undefined fold change.

A second part (skip it with ``--no-papalexi``) checks the perturbation discrimination score on
the benchmark's Papalexi 2021 seen knock-outs split (same seed): rnadiff's
``discrimination_score`` against cell-eval's ``discrimination_score`` (L1, called directly by
``benchmarks/peers/celleval_discrimination.py``), for every knock-out, on the additive
baseline's and rnadiff's predictions, with each knock-out's target gene left out
(``discrimination``, cell-eval's default) and over all genes (``discrimination_all_genes``).
cell-eval's ``1 - r/N`` is rescaled to rnadiff's ``1 - r/(N-1)`` before comparing; the two
should agree exactly.

Writes ``OUT/celleval_crosscheck.csv`` with columns
``task,fold,method,metric,rnadiff_value,celleval_metric,celleval_value,abs_diff,note`` and prints
the table. Needs the cell-eval venv (``bash benchmarks/peers/install.sh celleval``); without
it the script says so and exits 0 without writing anything. Run from the repository root::

    RNADIFF_DATA_DIR=../shared/data OMP_NUM_THREADS=1 .venv/bin/python \\
        benchmarks/celleval_crosscheck.py [--folds "CD4 T cells,B cells"] [--seed 0] \\
        [--out benchmarks/results] [--workdir DIR]

Each Kang fold trains rnadiff once (about 40 s on one thread) and runs cell-eval once (both
methods in one call); the Papalexi part trains one more model.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CELLEVAL_PYTHON = ROOT / ".peers" / "celleval" / "bin" / "python"
SCORER = ROOT / "benchmarks" / "peers" / "celleval_score.py"
DISCRIMINATION = ROOT / "benchmarks" / "peers" / "celleval_discrimination.py"
METHODS = {"rnadiff (counterfactual)": "rnadiff", "baseline: additive": "additive"}
FDR = 0.05  # cell-eval's significance threshold for its DE metrics
COLUMNS = [
    "task",
    "fold",
    "method",
    "metric",
    "rnadiff_value",
    "celleval_metric",
    "celleval_value",
    "abs_diff",
    "note",
]
SAME = "same definition; should agree to float32 precision"
PAIRS = [  # (rnadiff metric, cell-eval metric, note)
    ("pearson_delta_all", "pearson_delta", SAME),
    ("mse_mean", "mse", SAME),
    ("mse_mean", "mse_delta", SAME + " (same control on both sides: mse_delta = mse)"),
    (
        "de_overlap_top100",
        "overlap_at_100",
        "different DE ranking: rnadiff all genes by |Wilcoxon z|; cell-eval genes with "
        "MWU BH FDR<0.05 ranked by |log2FC| (expm1-mean pseudobulks), / min(100, n real sig)",
    ),
    (
        "direction_agreement_top100",
        "de_direction_match",
        "same sign test, different genes: rnadiff real top-100 by |z|; cell-eval all real "
        "genes with FDR<0.05",
    ),
    (
        "direction_agreement_celleval_genes",
        "de_direction_match",
        "rnadiff's sign test on cell-eval's real FDR<0.05 genes (from its real_de.csv)",
    ),
]


def write_h5ad(path: Path, x: np.ndarray, genes: list[str], pk: str, label: str, **uns) -> None:
    """Dense float32 log-normalized ``x`` with the perturbation column set to ``label``."""
    x = np.asarray(x, dtype=np.float32)
    if x.min() < 0 or x.max() >= 15:  # cell-eval's check of log-normalized input
        raise ValueError(f"{path.name}: values in [{x.min():.3f}, {x.max():.3f}], not [0, 15)")
    obs = pd.DataFrame(
        {pk: pd.Categorical([label] * len(x))}, index=[f"{path.stem}_{i}" for i in range(len(x))]
    )
    adata = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=genes))
    adata.uns.update(uns)
    adata.write_h5ad(path)


def run_celleval(split_dir: Path, preds: list[Path], outdir: Path, threads: int) -> None:
    cmd = [str(CELLEVAL_PYTHON), str(SCORER), str(split_dir), *map(str, preds)]
    cmd += ["--outdir", str(outdir), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-20:])
        raise RuntimeError(f"cell-eval failed (exit {proc.returncode}):\n{tail}")


def celleval_values(outdir: Path, name: str, target: str) -> pd.Series:
    """cell-eval's per-perturbation metrics of prediction ``name`` (its ``results.csv``)."""
    results = pd.read_csv(outdir / name / "results.csv")
    row = results[results["perturbation"].astype(str) == target]
    if len(row) != 1:
        raise RuntimeError(f"no single row for {target!r} in {outdir / name / 'results.csv'}")
    return pd.to_numeric(row.iloc[0].drop("perturbation"), errors="coerce")


def celleval_sig_genes(outdir: Path, name: str, target: str, genes: list[str]) -> np.ndarray:
    """Indices (in ``genes``) of cell-eval's real DE genes with FDR < 0.05."""
    de = pd.read_csv(outdir / name / "real_de.csv")
    de = de[de["target"].astype(str) == target]
    sig = de.loc[de["fdr"].astype(np.float32) < FDR, "feature"].astype(str)
    index = pd.Index(genes).get_indexer(sig)
    if (index < 0).any():
        raise RuntimeError("cell-eval's DE table names genes that are not in the split")
    return np.sort(index)


def crosscheck_fold(split, config, workdir: Path, threads: int) -> list[dict]:
    from rnadiff.evaluation._benchmark import baseline_predictions, prepare, rnadiff_predictions
    from rnadiff.evaluation._metrics import _direction_agreement, response_metrics

    ev = split.evaluations[0]
    pk, control = split.setup["perturbation_key"], split.setup["control"]
    target = str(ev.target[pk])
    prep = prepare(split, config)
    genes = [str(g) for g in prep.state.genes]
    pops = prep.evaluations[ev.name]
    preds = {"baseline: additive": baseline_predictions(split, prep)[ev.name]["baseline: additive"]}
    t0 = time.perf_counter()
    ours, _timing, _model = rnadiff_predictions(split, config)
    print(f"  rnadiff trained and predicted in {time.perf_counter() - t0:.0f} s", flush=True)
    preds["rnadiff (counterfactual)"] = ours[ev.name]["rnadiff (counterfactual)"]

    fold_dir = workdir / str(split.fold).replace(" ", "_").replace("+", "")
    fold_dir.mkdir(parents=True, exist_ok=True)
    meta = {"perturbation_key": pk, "control": control, "target": target}
    (fold_dir / "split.json").write_text(json.dumps(meta, indent=1))
    write_h5ad(fold_dir / "real.h5ad", pops["real"], genes, pk, target)
    write_h5ad(fold_dir / "source.h5ad", pops["source"], genes, pk, control)
    files = []
    for method, x in preds.items():
        name = METHODS[method]
        files.append(fold_dir / f"pred_{name}.h5ad")
        write_h5ad(files[-1], x, genes, pk, target, peer={"name": name})
    t0 = time.perf_counter()
    run_celleval(fold_dir, files, fold_dir / "celleval", threads)
    print(f"  cell-eval scored both methods in {time.perf_counter() - t0:.0f} s", flush=True)

    rows = []
    for method, x in preds.items():
        name = METHODS[method]
        # the arrays cell-eval read: float32, as written to the h5ad files
        x = np.asarray(x, dtype=np.float32)
        ours_m = response_metrics(
            x,
            pops["real"],
            pops["control"],
            top_n=(20, 100),
            distributional=True,
            seed=split.seed,
        )
        sig = celleval_sig_genes(fold_dir / "celleval", name, target, genes)
        ours_m["direction_agreement_celleval_genes"] = (
            _direction_agreement(x, pops["real"], pops["control"], sig) if len(sig) else np.nan
        )
        theirs = celleval_values(fold_dir / "celleval", name, target)
        counts = (
            f"; n sig genes real {theirs.get('de_nsig_counts_real', np.nan):.0f}, "
            f"pred {theirs.get('de_nsig_counts_pred', np.nan):.0f}"
        )
        for metric, ce_metric, note in PAIRS:
            a, b = float(ours_m[metric]), float(theirs.get(ce_metric, np.nan))
            rows.append(
                {
                    "task": split.task,
                    "fold": split.fold,
                    "method": method,
                    "metric": metric,
                    "rnadiff_value": a,
                    "celleval_metric": ce_metric,
                    "celleval_value": b,
                    "abs_diff": abs(a - b),
                    "note": note + (counts if ce_metric.startswith(("overlap", "de_")) else ""),
                }
            )
    return rows


def crosscheck_discrimination(split, config, workdir: Path) -> list[dict]:
    """Papalexi seen knock-outs: rnadiff's discrimination score against cell-eval's, with each
    knock-out's target gene left out (both tools' default) and over all genes."""
    from rnadiff.evaluation._benchmark import (
        baseline_predictions,
        prepare,
        rnadiff_predictions,
        target_gene_indices,
    )
    from rnadiff.evaluation._metrics import discrimination_score

    pk, control = split.setup["perturbation_key"], split.setup["control"]
    prep = prepare(split, config)
    genes = [str(g) for g in prep.state.genes]
    names = [ev.name for ev in split.evaluations]
    labels = {ev.name: str(ev.target[pk]) for ev in split.evaluations}
    # float32, as cell-eval reads them from the h5ad files
    real = {k: prep.evaluations[k]["real"].astype(np.float32) for k in names}
    ctrl = prep.evaluations[names[0]]["control"].astype(np.float32)
    base = baseline_predictions(split, prep)
    t0 = time.perf_counter()
    ours, _timing, _model = rnadiff_predictions(split, config)
    print(f"  rnadiff trained and predicted in {time.perf_counter() - t0:.0f} s", flush=True)
    preds = {
        "baseline: additive": {k: base[k]["baseline: additive"] for k in names},
        "rnadiff (counterfactual)": {k: ours[k]["rnadiff (counterfactual)"] for k in names},
    }
    out = workdir / f"papalexi_seen_seed{split.seed}"
    out.mkdir(parents=True, exist_ok=True)

    def write(path: Path, pops: dict) -> None:
        x = np.vstack([*(pops[k] for k in names), ctrl]).astype(np.float32)
        lab = [labels[k] for k in names for _ in range(len(pops[k]))] + [control] * len(ctrl)
        obs = pd.DataFrame({pk: pd.Categorical(lab)}, index=[f"c{i}" for i in range(len(x))])
        ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=genes)).write_h5ad(path)

    write(out / "real.h5ad", real)
    exclude = target_gene_indices(split, genes)
    n = len(names)
    rescale = f"cell-eval's 1 - r/N rescaled to rnadiff's 1 - r/(N-1), N = {n}"
    rows = []
    for method, pred in preds.items():
        path = out / f"pred_{METHODS[method]}.h5ad"
        pred = {k: np.asarray(v, dtype=np.float32) for k, v in pred.items()}
        write(path, pred)
        cmd = [str(CELLEVAL_PYTHON), str(DISCRIMINATION), str(out / "real.h5ad"), str(path)]
        cmd += ["--pert-col", pk, "--control", control]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-20:])
            raise RuntimeError(f"cell-eval failed (exit {proc.returncode}):\n{tail}")
        theirs = json.loads(proc.stdout.strip().splitlines()[-1])
        if theirs["n"] != n:
            raise RuntimeError(f"cell-eval saw {theirs['n']} perturbations, not {n}")
        for metric, ce_key, kw, note in (
            ("discrimination", "exclude_target_gene", {"exclude": exclude}, "target gene left out"),
            ("discrimination_all_genes", "all_genes", {}, "all genes"),
        ):
            mine, _ = discrimination_score(pred, real, ctrl, **kw)
            for k in names:
                a = mine[k]
                b = 1 - (1 - theirs[ce_key][labels[k]]) * n / (n - 1)
                rows.append(
                    {
                        "task": split.task,
                        "fold": k,
                        "method": method,
                        "metric": metric,
                        "rnadiff_value": a,
                        "celleval_metric": f"discrimination_score_l1 ({ce_key})",
                        "celleval_value": b,
                        "abs_diff": abs(a - b),
                        "note": f"same definition ({note}); {rescale}",
                    }
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Cross-check rnadiff's metrics against cell-eval on Kang folds.",
        epilog="Needs .peers/celleval (bash benchmarks/peers/install.sh celleval).",
    )
    parser.add_argument(
        "--folds",
        default="CD4 T cells,B cells",
        help="comma-separated held-out Kang cell types (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="split and training seed")
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "results",
        help="folder of celleval_crosscheck.csv (default: benchmarks/results)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the split files, predictions and cell-eval outputs here (default: a "
        "temporary folder, removed afterwards)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch and cell-eval threads")
    parser.add_argument(
        "--no-papalexi",
        action="store_true",
        help="skip the discrimination cross-check on Papalexi seen knock-outs (one model)",
    )
    args = parser.parse_args()
    if not CELLEVAL_PYTHON.exists():
        print(
            f"cell-eval cross-check skipped: {CELLEVAL_PYTHON.relative_to(ROOT)} not found "
            "(install it with: bash benchmarks/peers/install.sh celleval)"
        )
        return

    import torch

    from rnadiff import datasets
    from rnadiff.data import _splits as splits
    from rnadiff.evaluation._benchmark import BenchConfig

    torch.set_num_threads(args.threads)
    wanted = [f.strip() for f in args.folds.split(",") if f.strip()]
    t_start = time.perf_counter()
    folds = {
        s.fold: s
        for s in splits.kang_loo_celltype(datasets.load("kang2018_ifnb"), seed=args.seed)
        if s.fold in wanted
    }
    missing = [f for f in wanted if f not in folds]
    if missing:
        sys.exit(f"unknown Kang folds {missing}")
    config = BenchConfig()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        for fold in wanted:
            print(f"{fold} (seed {args.seed})", flush=True)
            rows += crosscheck_fold(folds[fold], config, workdir, args.threads)
        if not args.no_papalexi:
            print(f"Papalexi seen knock-outs (seed {args.seed}): discrimination", flush=True)
            data = splits.papalexi_clean(datasets.load("papalexi2021"))
            split = next(iter(splits.papalexi_seen(data, seed=args.seed)))
            rows += crosscheck_discrimination(split, config, workdir)
    table = pd.DataFrame(rows, columns=COLUMNS)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "celleval_crosscheck.csv"
    table.to_csv(path, index=False)

    with pd.option_context("display.width", 200, "display.max_colwidth", 40):
        print(table.drop(columns="note").round(6).to_string(index=False))
    print("\nnotes:")
    for metric, ce_metric, note in PAIRS:
        print(f"- {metric} vs {ce_metric}: {note}")
    print(f"\nwrote {path} ({time.perf_counter() - t_start:.0f} s)")


if __name__ == "__main__":
    main()
