"""Poisson or negative binomial counts out? (issue 23, "counts out ... chosen by measurement")

``python run.py SEED FOLD [FOLD ...]``: Kang leave-one-cell-type-out, the benchmark's split of
seed SEED for each FOLD (a held-out cell type); rnadiff trained as ``counts_kang`` trains it,
then the held-out type's **control** cells (a condition measured in training) generated with
counts three ways, everything else equal (the same expression, library sizes and seed):

- ``poisson``: ``c_g ~ Poisson(L m_g / sum m)`` (rnadiff's eq. 2, ``rnadiff.model._counts``);
- ``nb (theta from the data)``: a negative binomial of the same mean whose inverse dispersion
  is each gene's method-of-moments estimate on the training cells of that condition
  (``theta_g = mu_g^2 / (var_g - mu_g)`` of its depth-normalized counts, clipped to 0.01-1e4),
  as a count model fitted to raw data would give it;
- ``nb (theta 10)``: a negative binomial with one moderate dispersion for every gene.

Scored against the real control cells of the held-out type as ``counts_kang`` scores its
``measured`` rows (``count_realism``: library-size KS, zero fraction per gene, log variance
and log Fano factor correlations over genes, median log2 Fano ratio; ``population_metrics``:
kNN real-vs-generated AUC, E-distance). Rows appended to ``rows.csv`` beside this file.
"""

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # benchmarks/
from run import bench_config

import rnadiff.model._counts as counts_module
from rnadiff import RNADiffusion, datasets
from rnadiff.data import _splits as splits
from rnadiff.diffusion._counts import sample_counts as poisson_counts
from rnadiff.evaluation import count_realism
from rnadiff.evaluation._benchmark import prepare
from rnadiff.evaluation._metrics import population_metrics

seed, folds = int(sys.argv[1]), sys.argv[2:]
config = bench_config(None, None)


def dense(x):
    return np.asarray(x.todense() if hasattr(x, "todense") else x, dtype=np.float64)


def nb_sampler(theta):
    def sample(expr, library_sizes, *, rng):
        m = np.asarray(expr, dtype=np.float64)
        lib = np.asarray(library_sizes, dtype=np.float64).reshape(-1)
        total = m.sum(axis=1, keepdims=True)
        mu = np.divide(m * lib[:, None], total, out=np.zeros_like(m), where=total > 0)
        th = np.broadcast_to(np.asarray(theta, dtype=np.float64), mu.shape)
        return rng.poisson(rng.gamma(th, mu / th))  # NB(mu, theta) as a gamma-Poisson

    return sample


rows = []
for split in splits.kang_loo_celltype(datasets.load("kang2018_ifnb"), seed=seed):
    if split.fold not in folds:
        continue
    (ev,) = split.evaluations
    prep = prepare(split, config)
    pops, genes = prep.evaluations[ev.name], prep.genes
    train = split.train.copy()
    RNADiffusion.setup_anndata(train, **split.setup)
    t0 = time.perf_counter()
    model = RNADiffusion(train, config=config.model_config(), seed=seed)
    model.train(config=config.train_config(seed), progress=False)
    seen = {**ev.condition, split.setup["perturbation_key"]: split.setup["control"]}
    real_counts = dense(ev.source[:, genes].X)
    # theta from the training cells of that condition (depth-normalized counts)
    lib = real_counts.sum(1, keepdims=True)
    norm = real_counts / lib * np.median(lib)
    mu, var = norm.mean(0), norm.var(0, ddof=1)
    all_genes = list(model.preprocess.all_genes)
    theta_fit = (
        pd.Series(np.clip(mu**2 / np.maximum(var - mu, 1e-12), 0.01, 1e4), index=genes)
        .reindex(all_genes, fill_value=1e4)
        .to_numpy()
    )
    samplers = {
        "poisson": poisson_counts,
        "nb (theta from the data)": nb_sampler(theta_fit[None, :]),
        "nb (theta 10)": nb_sampler(10.0),
    }
    for name, sampler in samplers.items():
        counts_module.sample_counts = sampler
        made = model.generate(
            seen, n_cells=ev.source.n_obs, counts=True, steps=config.sampler_steps, seed=seed,
            progress=False,
        )[:, genes]  # fmt: skip
        counts_module.sample_counts = poisson_counts
        m = population_metrics(dense(made.X), pops["source"], pops["real"], seed=seed)
        m |= count_realism(made.layers["counts"], real_counts)
        m["zero_fraction"] = float((dense(made.X) == 0).mean())
        for k in ("knn_auc", "edistance", "library_ks", "zero_fraction", "zero_fraction_gene_corr",
                  "log_variance_gene_corr", "log_fano_gene_corr", "fano_log2_ratio"):  # fmt: skip
            rows.append(dict(seed=seed, fold=split.fold, method=name, metric=k, value=m.get(k)))
    rows.append(dict(seed=seed, fold=split.fold, method="real", metric="zero_fraction",
                     value=float((pops["source"] == 0).mean())))  # fmt: skip
    print(split.fold, f"{time.perf_counter() - t0:.0f} s", flush=True)
out = Path(__file__).with_name("rows.csv")
pd.DataFrame(rows).to_csv(out, mode="a", header=not out.exists(), index=False)
table = pd.DataFrame(rows).pivot_table(index=["fold", "method"], columns="metric", values="value")
print(table.round(3).to_string())
