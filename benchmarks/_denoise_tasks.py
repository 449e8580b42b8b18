"""Standalone tasks of counts (issue 23): denoising shallow counts without a reference, and
how real generated counts look.

``denoise_zeisel``, ``denoise_kang_ctrl``, ``denoise_sim``: a dataset's counts thinned to 10%,
20% and 50% of their UMIs (:func:`rnadiff.evaluation._denoise.thin`) are denoised by each
method from those shallow counts alone.

* **Molecular cross-validation** (Batson et al. 2019): the shallow counts are split into two
  binomial halves; each method denoises one half and is scored on the other by the Poisson
  deviance (metric ``mcv_loss``, lower is better). Needs no truth, so it runs on every dataset.
  With it, gene-gene correlation recovery against the other half (``gene_gene_corr_mcv``):
  the half's gene-gene correlations corrected for counting noise
  (:func:`rnadiff.evaluation._denoise.gene_correlation_recovery_mcv`, linear scale).
* **Deep truth** (Zeisel's deep cells, the simulator's deep draws; the Kang file is shallow,
  so it has none): each method denoises the whole shallow matrix and is compared with the
  normalized counts that thinning removed (the deep counts minus the shallow ones: 50-90% of
  the deep UMIs, independent of the shallow counts given the cell, so that returning the input
  unchanged earns nothing it should not): per-cell and per-gene Pearson of log values
  (``cell_corr``, ``gene_corr``) and gene-gene correlation recovery (``gene_gene_corr``).
* **Cell types** (Kang, simulator: labels in ``obs``): leave-one-out kNN accuracy and ARI of
  k-means in the principal components of the denoised log values.

Methods: the normalized counts (no denoising), PCA reconstruction, kNN smoothing, MAGIC (when
``magic-impute`` is installed), ``rnadiff.denoise`` (self-supervised) and scVI's normalized
expression (``scvi (normalized expression)``). scVI runs in its own venv
(``benchmarks/peers/install.sh scvi``): every matrix a task denoises (per rate, the MCV half and
the whole shallow matrix) goes to one run of ``peers/run_scvi_denoise.py`` as ``.npz``, which
fits one ``SCVI`` per matrix (scvi-tools defaults, ZINB) and returns
``get_normalized_expression(library_size=1e4, n_samples=25)``. Budget: scvi-tools' own epoch
rule (400 epochs up to 20k cells) cut to :data:`SCVI_MAX_STEPS` optimiser steps of batch 128,
the step cap of rnadiff's denoiser (Zeisel's 450-cell fits: 400 epochs; the simulator's 1,800:
200; Kang's 3,600: 104, about 1.5 min a fit on one core); its timings row records the epochs,
the last ELBO of every fit and whether each ELBO curve had levelled off (< 2% between the last
two tenths of the epochs). Without the venv, or when the run fails, scVI is reported as not run
(``summary.csv``: metric ``not run`` with the reason in ``note``) and the other methods' rows
stand.

Results (``benchmarks/results/denoise``, ``docs/benchmarks/denoising.md``): seeds 0-2 of Zeisel and
Kang, seed 0 of the simulator. rnadiff has the lowest ``mcv_loss`` at every depth of every
dataset (ahead of scVI and MAGIC in every seed); scVI recovers Zeisel's gene-gene correlations
better at every depth, and Kang has no deep truth to score them on.

``counts_kang``: the Kang leave-one-cell-type-out folds, generation from noise and the
counterfactual with and without ``counts=True``, scored as the main task does; and generation
of a condition measured in training (the held-out type's control cells, methods ending in
``measured``) against its real cells. Plus the realism of the counts: library sizes (KS
statistic against the real cells' totals), per-gene zero fraction (correlation with the real
one), the mean-variance relation (correlation of per-gene log variance), the share of exact
zeros and the largest value of ``X``.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from _tasks import register_standalone

from rnadiff import datasets
from rnadiff.evaluation import _denoise as den

RATES = (0.1, 0.2, 0.5)  # shares of the UMIs kept
ZEISEL_GENES = 1000  # most expressed Zeisel genes (of 3,529): keeps the task to minutes
KANG_CELLS = 4000  # Kang control cells drawn (of 12,261), every one of its 1,287 genes
SIM = dict(n_cells=2000, n_genes=500, library_median=20000.0)  # deep simulated cells
ROOT = Path(__file__).resolve().parents[1]


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def _methods(seed: int) -> dict:
    """Name -> ``fn(counts) -> expression per 1e4`` of every denoiser run in this process."""
    from rnadiff.model._self_denoise import fit_denoisers

    def ours(counts):  # rnadiff.denoise's defaults (an ensemble of 3 networks)
        expression, _ = fit_denoisers(counts, seed=seed)
        return expression(counts)

    methods = {
        "normalized": den.normalized,
        "pca": lambda c: den.pca_reconstruction(c, seed=seed),
        "knn_smoothing": lambda c: den.knn_smoothing(c, seed=seed),
        "rnadiff (self-supervised)": ours,
    }
    try:
        import magic  # noqa: F401

        methods["magic"] = lambda c: den.magic_expression(c, seed=seed)
    except ImportError:
        pass
    return methods


# ------------------------------------------------------------------ scVI, in its own venv
SCVI = "scvi (normalized expression)"
SCVI_MAX_STEPS = 3000  # optimiser steps per fit: the cap of rnadiff's denoiser (fit_denoiser)
SCVI_BUDGET = f"{SCVI_MAX_STEPS} steps of batch 128 (at most scvi-tools' 400 epochs)"
SCVI_RUNNER = ROOT / "benchmarks" / "peers" / "run_scvi_denoise.py"


def _scvi_python() -> Path:
    """The scVI venv's python (``benchmarks/peers/install.sh scvi``)."""
    peers = Path(os.environ.get("RNADIFF_PEERS_DIR", ROOT / ".peers"))
    return peers / "scvi" / "bin" / "python"


def scvi_expression(
    matrices: list[np.ndarray], *, seed: int, max_steps: int = SCVI_MAX_STEPS
) -> tuple[list[np.ndarray] | None, dict]:
    """scVI's normalized expression (per 1e4) of each count matrix, one model fitted per
    matrix, in one run of ``peers/run_scvi_denoise.py`` in the scVI venv; and the method's
    timings row. ``None`` (and a ``note`` saying why) when the venv is missing or the run
    fails, so that the other methods' rows still count."""
    info = {"method": SCVI, "fold": "all", "budget": SCVI_BUDGET}
    python = _scvi_python()
    if not python.exists():
        note = "not run (venv missing: bash benchmarks/peers/install.sh scvi)"
        return None, {**info, "train_s": np.nan, "predict_s": np.nan, "note": note}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "counts.npz", Path(tmp) / "expression.npz"
        np.savez(inp, **{f"counts_{i}": m.astype(np.int32) for i, m in enumerate(matrices)})
        cmd = [str(python), str(SCVI_RUNNER), str(inp), str(out), "--seed", str(seed)]
        cmd += ["--max-steps", str(max_steps)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            note = f"not run (scvi failed, exit {proc.returncode}: {tail})"
            return None, {**info, "train_s": np.nan, "predict_s": np.nan, "note": note}
        with np.load(out) as f:
            record = json.loads(str(f["info"]))
            expressions = [f[f"expression_{i}"] for i in range(len(matrices))]
    wall = time.perf_counter() - t0
    fits = record["fits"]
    train_s = float(sum(fit["train_s"] for fit in fits))
    drops = [fit.get("convergence_relative_drop", np.nan) for fit in fits]
    return expressions, {
        **info,
        "train_s": train_s,
        "predict_s": wall - train_s,  # import, prediction and the files
        "version": record["version"],
        "epochs": "/".join(str(e) for e in sorted({fit["epochs"] for fit in fits})),
        # every fit's ELBO fell by < 2% between the last two tenths of its epochs
        "converged": all(fit.get("convergence_converged") is True for fit in fits),
        "elbo_last": ";".join(f"{fit['elbo_last']:.1f}" for fit in fits),
        "elbo_relative_drop_max": float(np.nanmax(drops)) if fits else np.nan,
    }


def denoise_rows(task: str, deep, *, labels=None, has_truth: bool, seed: int):
    """Every method at every thinning rate of ``deep`` (cells x genes counts): tidy rows and
    timings."""
    deep = _dense(deep)
    rows, timings = [], []

    def row(rate, method, metric, value):
        rows.append(
            dict(
                task=task,
                fold="all",
                seed=seed,
                evaluation=f"thinned to {round(rate * 100)}%",
                method=method,
                metric=metric,
                value=float(value),
            )
        )

    # what every method denoises: per rate, an MCV half and (with truth or labels) the whole
    # shallow matrix
    whole = has_truth or labels is not None
    cases, matrices = [], []
    for r, rate in enumerate(RATES):
        shallow = den.thin(deep, rate, seed=seed * 1000 + r)
        keep = shallow.sum(1) > 0  # a cell thinned to nothing is not denoisable
        shallow = shallow[keep]
        truth = den.normalized(deep[keep] - shallow) if has_truth else None
        half, other = den.mcv_split(shallow, p=0.5, seed=seed * 1000 + 500 + r)
        usable = half.sum(1) > 0
        cases.append(dict(rate=rate, keep=keep, truth=truth, other=other[usable]))
        matrices += [half[usable], shallow] if whole else [half[usable]]

    def score(name, expressions):
        per_case = iter(expressions)
        for case in cases:
            rate = case["rate"]
            half_expr = next(per_case)
            row(rate, name, "mcv_loss", den.mcv_loss(half_expr, case["other"]))
            recovery = den.gene_correlation_recovery_mcv(half_expr, case["other"])
            row(rate, name, "gene_gene_corr_mcv", recovery)
            if not whole:
                continue
            expr = next(per_case)
            if has_truth:
                for metric, value in den.correlations(expr, case["truth"]).items():
                    row(rate, name, metric, value)
                recovery = den.gene_correlation_recovery(expr, case["truth"])
                row(rate, name, "gene_gene_corr", recovery)
            if labels is not None:
                kept = np.asarray(labels)[case["keep"]]
                for metric, value in den.cell_type_scores(expr, kept, seed=seed).items():
                    row(rate, name, metric, value)

    for name, fn in _methods(seed).items():
        t0 = time.perf_counter()
        expressions = [fn(m) for m in matrices]
        seconds = time.perf_counter() - t0
        score(name, expressions)
        timings.append({"method": name, "train_s": 0.0, "predict_s": seconds, "fold": "all"})
    expressions, timing = scvi_expression(matrices, seed=seed)
    if expressions is not None:
        score(SCVI, expressions)
    timings.append(timing)
    return pd.DataFrame(rows), pd.DataFrame(timings)


@register_standalone("denoise_zeisel")
def denoise_zeisel(seed: int, config):
    """Zeisel 2015 cortex, 500 deep cells (7k-44k UMIs), its most expressed genes."""
    adata = datasets.load("zeisel2015")
    x = _dense(adata.X)
    genes = np.sort(np.argsort(-x.sum(0), kind="stable")[:ZEISEL_GENES])
    return denoise_rows("denoise_zeisel", x[:, genes], has_truth=True, seed=seed)


@register_standalone("denoise_kang_ctrl")
def denoise_kang_ctrl(seed: int, config):
    """Kang 2018 control PBMCs (about 1,000 UMIs per cell: no deep truth), cell types."""
    adata = datasets.load("kang2018_ctrl")
    cells = np.sort(np.random.default_rng(seed).choice(adata.n_obs, KANG_CELLS, replace=False))
    sub = adata[cells]
    x = _dense(sub.X)
    labels = sub.obs["cluster_id"].astype(str).to_numpy()
    return denoise_rows("denoise_kang_ctrl", x, labels=labels, has_truth=False, seed=seed)


@register_standalone("denoise_sim")
def denoise_sim(seed: int, config):
    """The simulator's cells drawn deep (median 20,000 UMIs): deep truth and cell types."""
    adata, _ = datasets.simulate(
        SIM["n_cells"], seed=seed, **{k: SIM[k] for k in SIM if k != "n_cells"}
    )
    x = _dense(adata.X)
    x = x[:, x.sum(0) > 0]
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    return denoise_rows("denoise_sim", x, labels=labels, has_truth=True, seed=seed)


# ------------------------------------------------------------------ counts out, Kang
@register_standalone("counts_kang")
def counts_kang(seed: int, config, out=None):
    """Kang leave-one-cell-type-out: generation and counterfactual with and without counts;
    seed 0 draws each fold's realism figures of the generated counts into ``out``."""
    from rnadiff import RNADiffusion
    from rnadiff.data import _splits as splits
    from rnadiff.evaluation import count_realism, plot_count_realism
    from rnadiff.evaluation._benchmark import prepare
    from rnadiff.evaluation._metrics import population_metrics, response_metrics

    rows, timings = [], []

    def row(split, method, metric, value):
        rows.append(
            dict(
                task="counts_kang",
                fold=split.fold,
                seed=seed,
                evaluation=split.evaluations[0].name,
                method=method,
                metric=metric,
                value=float(value),
            )
        )

    for split in splits.kang_loo_celltype(datasets.load("kang2018_ifnb"), seed=seed):
        (ev,) = split.evaluations
        prep = prepare(split, config)
        pops = prep.evaluations[ev.name]
        t0 = time.perf_counter()
        train = split.train.copy()
        RNADiffusion.setup_anndata(train, **split.setup)
        model = RNADiffusion(train, config=config.model_config(), seed=seed)
        model.train(config=config.train_config(seed), progress=False)
        train_s, t0 = time.perf_counter() - t0, time.perf_counter()
        kw = dict(steps=config.sampler_steps, seed=seed, progress=False)
        genes = prep.genes
        outputs = {}
        for counts in (False, True):
            tag = ", counts" if counts else ""
            gen = model.generate(ev.condition, n_cells=ev.real.n_obs, counts=counts, **kw)
            cf = model.predict(ev.source, target=ev.target, counts=counts, **kw)
            outputs[f"rnadiff (generation{tag})"] = gen[:, genes]
            outputs[f"rnadiff (counterfactual{tag})"] = cf[:, genes]
            # a condition measured in training (the held-out type's control cells)
            seen = {**ev.condition, split.setup["perturbation_key"]: split.setup["control"]}
            made = model.generate(seen, n_cells=ev.source.n_obs, counts=counts, **kw)
            outputs[f"rnadiff (generation{tag}, measured)"] = made[:, genes]
        predict_s = time.perf_counter() - t0

        for method, made in outputs.items():
            x = _dense(made.X)
            if method.endswith("measured)"):  # against the real cells of that condition
                real, real_counts = pops["source"], ev.source[:, genes].X
                metrics = population_metrics(x, real, pops["real"], seed=seed)
                metrics = {k: metrics[k] for k in ("edistance", "mmd", "knn_auc")}
            else:
                real, real_counts = pops["real"], ev.real[:, genes].X
                metrics = response_metrics(
                    x, real, pops["control"], top_n=(20, 100), distributional=True, seed=seed
                )
            metrics |= {"zero_fraction": (x == 0).mean(), "max_value": x.max()}
            if "counts" in made.layers:
                metrics |= count_realism(made.layers["counts"], real_counts)
                if out is not None and seed == 0 and method.startswith("rnadiff (generation"):
                    which = "measured" if method.endswith("measured)") else "held_out"
                    fold = str(split.fold).replace(" ", "_").replace("+", "")
                    plot_count_realism(
                        made.layers["counts"],
                        real_counts,
                        Path(out) / f"realism_counts_kang_{fold}_{which}.png",
                        title=f"counts_kang, {split.fold}: {method} vs real (seed 0)",
                    )
            for metric, value in metrics.items():
                row(split, method, metric, value)
        row(split, "real (held out)", "zero_fraction", (pops["real"] == 0).mean())
        row(split, "real (held out)", "max_value", pops["real"].max())
        row(split, "real (measured)", "zero_fraction", (pops["source"] == 0).mean())
        row(split, "real (measured)", "max_value", pops["source"].max())
        timings.append(
            {"method": "rnadiff", "train_s": train_s, "predict_s": predict_s, "fold": split.fold}
        )
    return pd.DataFrame(rows), pd.DataFrame(timings)
