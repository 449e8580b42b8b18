"""Standalone tasks of counts (issue 23): denoising shallow counts without a reference, and
how real generated counts look.

``denoise_zeisel``, ``denoise_kang_ctrl``, ``denoise_sim``: a dataset's counts thinned to 10%,
20% and 50% of their UMIs (:func:`rnadiff.evaluation._denoise.thin`) are denoised by each
method from those shallow counts alone.

* **Molecular cross-validation** (Batson et al. 2019): the shallow counts are split into two
  binomial halves; each method denoises one half and is scored on the other by the Poisson
  deviance (metric ``mcv_loss``, lower is better). Needs no truth, so it runs on every dataset.
* **Deep truth** (Zeisel's deep cells, the simulator's deep draws; the Kang file is shallow,
  so it has none): each method denoises the whole shallow matrix and is compared with the
  normalized counts that thinning removed (the deep counts minus the shallow ones: 50-90% of
  the deep UMIs, independent of the shallow counts given the cell, so that returning the input
  unchanged earns nothing it should not): per-cell and per-gene Pearson of log values
  (``cell_corr``, ``gene_corr``) and gene-gene correlation recovery (``gene_gene_corr``).
* **Cell types** (Kang, simulator: labels in ``obs``): leave-one-out kNN accuracy and ARI of
  k-means in the principal components of the denoised log values.

Methods: the normalized counts (no denoising), PCA reconstruction, kNN smoothing, MAGIC (when
``magic-impute`` is installed) and ``rnadiff.denoise`` (self-supervised). scVI runs in its own
environment (``benchmarks/peers``) and is not part of these tasks yet.

``counts_kang``: the Kang leave-one-cell-type-out folds, generation from noise and the
counterfactual with and without ``counts=True``, scored as the main task does; and generation
of a condition measured in training (the held-out type's control cells, methods ending in
``measured``) against its real cells. Plus the realism of the counts: library sizes (KS
statistic against the real cells' totals), per-gene zero fraction (correlation with the real
one), the mean-variance relation (correlation of per-gene log variance), the share of exact
zeros and the largest value of ``X``.
"""

from __future__ import annotations

import time

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


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def _methods(seed: int) -> dict:
    """Name -> ``fn(counts) -> expression per 1e4`` of every denoiser compared."""
    from rnadiff.model._self_denoise import fit_denoiser

    def ours(counts):
        expression, _ = fit_denoiser(counts, seed=seed)
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


def denoise_rows(task: str, deep, *, labels=None, has_truth: bool, seed: int):
    """Every method at every thinning rate of ``deep`` (cells x genes counts): tidy rows and
    timings."""
    deep = _dense(deep)
    rows, timings = [], {}

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

    for r, rate in enumerate(RATES):
        shallow = den.thin(deep, rate, seed=seed * 1000 + r)
        keep = shallow.sum(1) > 0  # a cell thinned to nothing is not denoisable
        shallow = shallow[keep]
        truth = den.normalized(deep[keep] - shallow) if has_truth else None
        half, other = den.mcv_split(shallow, p=0.5, seed=seed * 1000 + 500 + r)
        usable = half.sum(1) > 0
        for name, fn in _methods(seed).items():
            t0 = time.perf_counter()
            row(rate, name, "mcv_loss", den.mcv_loss(fn(half[usable]), other[usable]))
            if has_truth or labels is not None:
                expr = fn(shallow)
                if has_truth:
                    for metric, value in den.correlations(expr, truth).items():
                        row(rate, name, metric, value)
                    row(
                        rate,
                        name,
                        "gene_gene_corr",
                        den.gene_correlation_recovery(expr, truth),
                    )
                if labels is not None:
                    scores = den.cell_type_scores(expr, np.asarray(labels)[keep], seed=seed)
                    for metric, value in scores.items():
                        row(rate, name, metric, value)
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
    times = pd.DataFrame(
        [{"method": m, "train_s": 0.0, "predict_s": s, "fold": "all"} for m, s in timings.items()]
    )
    return pd.DataFrame(rows), times


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
def _realism(counts, real_counts) -> dict[str, float]:
    """Library-size KS, per-gene zero-fraction and log-variance correlations of counts."""
    from scipy.stats import ks_2samp

    c, r = _dense(counts), _dense(real_counts)
    zc, zr = (c == 0).mean(0), (r == 0).mean(0)
    vc, vr = np.log1p(c.var(0)), np.log1p(r.var(0))
    both = (zc < 1) | (zr < 1)
    return {
        "library_ks": float(ks_2samp(c.sum(1), r.sum(1)).statistic),
        "zero_fraction_gene_corr": float(np.corrcoef(zc[both], zr[both])[0, 1]),
        "log_variance_gene_corr": float(np.corrcoef(vc[both], vr[both])[0, 1]),
    }


@register_standalone("counts_kang")
def counts_kang(seed: int, config):
    """Kang leave-one-cell-type-out: generation and counterfactual with and without counts."""
    from rnadiff import RNADiffusion
    from rnadiff.data import _splits as splits
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

        for method, out in outputs.items():
            x = _dense(out.X)
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
            if "counts" in out.layers:
                metrics |= _realism(out.layers["counts"], real_counts)
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
