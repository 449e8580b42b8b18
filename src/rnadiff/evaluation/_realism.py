"""How real generated counts look: library sizes, zeros and the mean-variance relation of
each gene, generated against real (pure functions on count matrices)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from rnadiff._errors import InputError


def _dense_counts(x, what: str) -> np.ndarray:
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    if x.ndim != 2 or len(x) < 2:
        raise InputError(f"{what} must be a (cells, genes) matrix of at least 2 cells")
    return x.astype(np.float64)


def gene_moments(counts) -> dict[str, np.ndarray]:
    """Per-gene statistics of a count matrix: ``mean``, ``variance`` (over cells, ddof 0) and
    ``zero_fraction`` over cells, and each cell's ``library`` size (total counts)."""
    x = _dense_counts(counts, "counts")
    return {
        "mean": x.mean(0),
        "variance": x.var(0),
        "zero_fraction": (x == 0).mean(0),
        "library": x.sum(1),
    }


def count_realism(generated, real) -> dict[str, float]:
    """Numbers of how real generated counts look, gene for gene.

    - ``library_ks``: two-sample Kolmogorov-Smirnov statistic of the cells' library sizes
      (0: the same distribution, 1: disjoint).
    - ``zero_fraction_gene_corr``: Pearson correlation over genes of the fraction of cells
      with zero counts, generated against real.
    - ``log_variance_gene_corr``: the same for ``log1p`` of each gene's variance.
    - ``log_fano_gene_corr`` and ``fano_log2_ratio``: the mean-variance relation beyond the
      mean itself. A gene's Fano factor ``F_g = var_g / mean_g`` is 1 for Poisson counts and
      grows with over-dispersion (``1 + mean_g / theta_g`` for a negative binomial);
      the correlation over genes of ``log F_g`` generated against real, and the median of
      ``log2(F_gen / F_real)`` (0: as over-dispersed as the real cells; below 0: less).

    Genes counted in neither matrix are left out; the Fano factors use genes with a
    non-zero mean in both.

    Parameters
    ----------
    generated, real
        Counts, ``(cells, genes)`` each (dense or sparse), the same genes in the same order.

    Returns
    -------
    dict
        The five numbers, as floats.
    """
    return realism_of_moments(gene_moments(generated), gene_moments(real))


def realism_of_moments(g: dict, r: dict) -> dict[str, float]:
    """:func:`count_realism` from the :func:`gene_moments` of generated (``g``) and real
    (``r``) counts."""
    from scipy.stats import ks_2samp

    if len(g["mean"]) != len(r["mean"]):
        raise InputError(
            f"generated and real counts have {len(g['mean'])} and {len(r['mean'])} genes"
        )
    counted = (g["zero_fraction"] < 1) | (r["zero_fraction"] < 1)
    both = (g["mean"] > 0) & (r["mean"] > 0)
    fano_g, fano_r = g["variance"][both] / g["mean"][both], r["variance"][both] / r["mean"][both]
    fano_g, fano_r = np.maximum(fano_g, 1e-12), np.maximum(fano_r, 1e-12)

    def corr(a, b) -> float:
        return float(np.corrcoef(a, b)[0, 1]) if len(a) > 1 and a.std() and b.std() else np.nan

    return {
        "library_ks": float(ks_2samp(g["library"], r["library"]).statistic),
        "zero_fraction_gene_corr": corr(g["zero_fraction"][counted], r["zero_fraction"][counted]),
        "log_variance_gene_corr": corr(
            np.log1p(g["variance"][counted]), np.log1p(r["variance"][counted])
        ),
        "log_fano_gene_corr": corr(np.log(fano_g), np.log(fano_r)),
        "fano_log2_ratio": float(np.median(np.log2(fano_g / fano_r))) if both.any() else np.nan,
    }
