"""Plots (PNG) of predictions against real data."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from rnadiff.data._io import save_figure


def plot_mean_change(
    predicted_change: Mapping[str, np.ndarray],
    real_change: np.ndarray,
    path: str | os.PathLike,
    *,
    highlight: np.ndarray | None = None,
    title: str = "",
) -> None:
    """Scatter of predicted vs real change of gene means from control, one panel per method.

    Parameters
    ----------
    predicted_change
        ``{method: mean(predicted) - mean(control)}`` per gene.
    real_change
        ``mean(real perturbed) - mean(control)`` per gene.
    path
        Output PNG.
    highlight
        Indices of genes drawn in color (e.g. the top DE genes of the real response).
    title
        Figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(predicted_change)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.8), squeeze=False, sharey=True)
    lim = float(np.abs(real_change).max()) * 1.1
    for ax, (name, change) in zip(axes[0], predicted_change.items(), strict=True):
        lim = max(lim, float(np.abs(change).max()) * 1.1)
        ax.scatter(real_change, change, s=4, c="0.6", lw=0, label="all genes")
        if highlight is not None:
            ax.scatter(
                real_change[highlight],
                change[highlight],
                s=6,
                c="C3",
                lw=0,
                label="top-100 DE genes",
            )
        if change.std() > 0:
            r = f"{np.corrcoef(change, real_change)[0, 1]:.3f}"
        else:
            r = "undefined (no change)"
        ax.set_title(f"{name}\nPearson r = {r}", fontsize=9)
        ax.set_xlabel("real change of mean (log)")
    for ax in axes[0]:
        ax.plot([-lim, lim], [-lim, lim], c="k", lw=0.6, ls="--")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.axhline(0, c="0.85", lw=0.5)
        ax.axvline(0, c="0.85", lw=0.5)
    axes[0][0].set_ylabel("predicted change of mean (log)")
    axes[0][0].legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=130)
    plt.close(fig)


def plot_fold_bars(rows, path: str | os.PathLike, *, metrics: list[str]) -> None:
    """Bars of each method's metric per fold (mean over seeds, error bar: sd).

    Parameters
    ----------
    rows
        Tidy benchmark rows with columns ``fold, method, metric, value``.
    path
        Output PNG.
    metrics
        One panel per metric.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = sorted(set(rows["method"]))
    folds = sorted(set(rows["fold"]))
    fig, axes = plt.subplots(
        len(metrics), 1, figsize=(1.6 * len(folds) + 4, 2.6 * len(metrics)), squeeze=False
    )
    width = 0.8 / max(len(methods), 1)
    for ax, metric in zip(axes[:, 0], metrics, strict=True):
        sub = rows[rows["metric"] == metric]
        stats = sub.groupby(["fold", "method"])["value"].agg(["mean", "std"])
        for i, method in enumerate(methods):
            means = [stats["mean"].get((f, method), np.nan) for f in folds]
            sds = [stats["std"].get((f, method), 0.0) for f in folds]
            x = np.arange(len(folds)) + i * width
            ax.bar(x, means, width, yerr=np.nan_to_num(sds), label=method, capsize=2)
        ax.set_xticks(np.arange(len(folds)) + width * (len(methods) - 1) / 2)
        ax.set_xticklabels(folds, fontsize=8)
        ax.set_ylabel(metric, fontsize=8)
    axes[0, 0].legend(fontsize=7, ncol=3, loc="lower left", bbox_to_anchor=(0, 1.02))
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def plot_design(designed, path: str | os.PathLike, *, title: str = "") -> None:
    """Designed cells: distance to the specification vs realism, colored by success.

    Parameters
    ----------
    designed
        AnnData returned by :meth:`rnadiff.RNADiffusion.design` (``obs`` holds
        ``distance_to_spec``, ``realism`` and ``meets_spec``).
    path
        Output PNG.
    title
        Figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    obs = designed.obs
    ok = obs["meets_spec"].to_numpy(dtype=bool)
    realism = obs["realism"].to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for mask, color, label in ((ok, "tab:green", "meets"), (~ok, "tab:red", "misses")):
        ax.scatter(
            realism[mask],
            obs["distance_to_spec"].to_numpy()[mask],
            s=8,
            alpha=0.6,
            color=color,
            label=f"{label} ({int(mask.sum())})",
        )
    ax.axvline(1.0, color="grey", lw=0.8, ls="--", label="real-to-real median")
    ax.axvline(1.2, color="grey", lw=0.8, ls=":", label="1.2x")
    ax.set_xlabel("realism (nearest real cell / real-to-real distance)")
    ax.set_ylabel("distance to specification (log units)")
    ax.set_title(title or "designed cells")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def plot_ranking(
    ranked, path: str | os.PathLike, *, top: int = 20, highlight=(), title: str = ""
) -> None:
    """Bar charts of the best-ranked candidates: likelihood and generation scores.

    Parameters
    ----------
    ranked
        DataFrame returned by :meth:`rnadiff.RNADiffusion.rank_perturbations`.
    path
        Output PNG.
    top
        Candidates shown (best combined rank first).
    highlight
        Candidates drawn in a different color (e.g. the expected ones).
    title
        Figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    head = ranked.sort_values("rank").head(top).iloc[::-1]
    colors = ["tab:orange" if p in set(highlight) else "tab:blue" for p in head["perturbation"]]
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.3 * len(head) + 1.5), sharey=True)
    for ax, col, label in (
        (axes[0], "likelihood_score", "likelihood score (error under control - under candidate)"),
        (axes[1], "phenotype_score", "generation score (higher: closer to the phenotype)"),
    ):
        ax.barh(head["perturbation"].astype(str), head[col], color=colors)
        ax.set_xlabel(label, fontsize=8)
        ax.axvline(0, color="grey", lw=0.8)
    axes[0].set_ylabel("candidate (best combined rank on top)")
    fig.suptitle(title or "perturbations ranked for the target phenotype")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def plot_conditions(
    table, path: str | os.PathLike, *, metrics: tuple[str, ...] | None = None, title: str = ""
) -> None:
    """Horizontal bars of per-condition metrics (one panel per metric), e.g. the table of
    :func:`rnadiff.evaluation._score.score_conditions`.

    Parameters
    ----------
    table
        DataFrame with one row per condition (index: its label) and one column per metric.
    path
        Output PNG.
    metrics
        Columns shown; default: Pearson delta top-100, R² of the top-100 DE genes' means and
        the discrimination score, those present.
    title
        Figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if metrics is None:
        wanted = ("pearson_delta_top100", "r2_mean_top100", "discrimination")
        metrics = tuple(m for m in wanted if m in table.columns)
    missing = [m for m in metrics if m not in table.columns]
    if missing or not metrics:
        raise ValueError(f"metrics not in the table: {missing or 'none given'}")
    labels = [str(i) for i in table.index][::-1]
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(3.2 * len(metrics) + 1.5, 0.28 * len(labels) + 1.6), sharey=True
    )
    axes = np.atleast_1d(axes)
    for ax, metric in zip(axes, metrics, strict=True):
        values = table[metric].to_numpy(dtype=float)[::-1]
        ax.barh(labels, np.nan_to_num(values), color="tab:blue")
        mean = np.nanmean(values) if np.isfinite(values).any() else np.nan
        if np.isfinite(mean):
            ax.axvline(mean, color="tab:orange", lw=1, label=f"mean {mean:.3f}")
            ax.legend(fontsize=7, loc="lower right")
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_xlabel(metric, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(title or "per-condition scores")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def plot_umap(
    real: Mapping[str, np.ndarray],
    predicted: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    *,
    max_cells: int = 1000,
    seed: int = 0,
    title: str = "",
) -> str:
    """UMAP of real and predicted cells: one panel per method over the real cells.

    The embedding is fitted once on all cells together (PCA on the real cells first, 30
    axes). Uses ``umap-learn`` when installed (it comes with scanpy); otherwise the first two
    principal axes, and the axis labels say so.

    Parameters
    ----------
    real
        ``{label: cells x genes}`` of real populations, e.g. ``{"real stim": ..., "real
        control": ...}``; drawn in every panel.
    predicted
        ``{method: cells x genes}``, one panel each.
    path
        Output PNG.
    max_cells
        Cells per population (a seeded subset beyond this).
    seed
        Seed of the subsets and of UMAP.
    title
        Figure title.

    Returns
    -------
    str
        ``"umap"`` or ``"pca"``: the embedding used.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rnadiff.evaluation._distances import fit_pca, project

    rng = np.random.default_rng(seed)

    def sub(x):
        x = np.asarray(x)
        return x[np.sort(rng.choice(len(x), max_cells, replace=False))] if len(x) > max_cells else x

    pops = {k: sub(v) for k, v in {**real, **predicted}.items()}
    pca = fit_pca(np.vstack([pops[k] for k in real]), n_components=30, seed=seed)
    stacked = project(np.vstack(list(pops.values())), pca)
    try:
        import umap

        emb = umap.UMAP(random_state=seed, n_neighbors=15, min_dist=0.3).fit_transform(stacked)
        kind = "umap"
    except ImportError:
        emb, kind = stacked[:, :2], "pca"
    bounds = np.cumsum([0] + [len(v) for v in pops.values()])
    coords = {k: emb[bounds[i] : bounds[i + 1]] for i, k in enumerate(pops)}
    n = max(len(predicted), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.6), squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, method in zip(axes[0], predicted or {"": None}, strict=False):
        for i, label in enumerate(real):
            c = coords[label]
            ax.scatter(c[:, 0], c[:, 1], s=3, alpha=0.35, color=colors(i), label=label)
        if method:
            c = coords[method]
            ax.scatter(c[:, 0], c[:, 1], s=3, alpha=0.6, color="black", label="predicted")
        ax.set_title(method, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{kind.upper()} 1", fontsize=8)
    axes[0][0].legend(fontsize=7, markerscale=3, loc="best")
    fig.suptitle(title or "real and predicted cells")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return kind


def plot_count_realism(
    generated, real, path: str | os.PathLike, *, title: str = "", label: str = "generated"
) -> None:
    """Three panels of generated against real counts: the cells' library sizes (empirical
    distribution functions), each gene's fraction of zero counts, and each gene's variance
    against its mean (log scales, with the Poisson line ``var = mean``). The numbers are
    :func:`rnadiff.evaluation.count_realism`'s.

    Parameters
    ----------
    generated, real
        Counts, ``(cells, genes)`` each (dense or sparse), the same genes in the same order.
    path
        Output PNG.
    title
        Figure title.
    label
        Name of the generated cells in the legends.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rnadiff.evaluation._realism import gene_moments, realism_of_moments

    g, r = gene_moments(generated), gene_moments(real)
    numbers = realism_of_moments(g, r)
    fig, axes = plt.subplots(1, 3, figsize=(11.5, 3.8))
    ax = axes[0]
    for name, lib, color in (("real", r["library"], "0.3"), (label, g["library"], "C3")):
        x = np.sort(lib)
        ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post", c=color, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("library size (counts per cell)")
    ax.set_ylabel("fraction of cells")
    ax.set_title(f"library sizes: KS {numbers['library_ks']:.3f}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax = axes[1]
    ax.scatter(r["zero_fraction"], g["zero_fraction"], s=4, c="C0", lw=0)
    ax.plot([0, 1], [0, 1], c="k", lw=0.6, ls="--")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("real: fraction of cells with 0 counts")
    ax.set_ylabel(f"{label}: fraction with 0")
    ax.set_title(f"zeros per gene: r = {numbers['zero_fraction_gene_corr']:.3f}", fontsize=9)
    ax = axes[2]
    for name, m, color in (("real", r, "0.3"), (label, g, "C3")):
        ok = (m["mean"] > 0) & (m["variance"] > 0)
        ax.scatter(m["mean"][ok], m["variance"][ok], s=4, c=color, lw=0, alpha=0.6, label=name)
    means = np.concatenate([m["mean"][m["mean"] > 0] for m in (g, r)])
    if len(means):
        line = np.array([means.min(), means.max()])
        ax.plot(line, line, c="k", lw=0.6, ls="--", label="Poisson (var = mean)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("gene mean (counts per cell)")
    ax.set_ylabel("gene variance")
    ax.set_title(
        f"mean-variance: log Fano factor r = {numbers['log_fano_gene_corr']:.3f}\n"
        f"median log2 Fano ratio ({label} / real) {numbers['fano_log2_ratio']:+.2f}",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=130)
    plt.close(fig)
