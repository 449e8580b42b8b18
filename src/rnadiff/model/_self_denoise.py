"""Self-supervised denoising of a count matrix: no reference, no model to bring.

``rnadiff.denoise(adata)`` learns from the cells' own UMIs: a network is trained to predict
the UMIs held out of a binomial split of each cell from the rest
(:mod:`rnadiff.training._count_split`; molecular cross-validation, Batson et al. 2019), then
gives every cell's expected expression from all its counts. With a model trained on deeper
cells of the same kind, :meth:`rnadiff.RNADiffusion.denoise` is the other way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from rnadiff._errors import InputError
from rnadiff.data._expression import choose_source, matrix
from rnadiff.data._preprocessing import totals
from rnadiff.model._data import check_cells
from rnadiff.networks._count_denoiser import CountDenoiser
from rnadiff.training._count_split import Features, Neighbours, SplitFit, fit_count_split

logger = logging.getLogger("rnadiff")

MIN_CELLS = 20  # fewer cells: nothing to learn a shared structure from
MIN_GAIN = 0.002  # validation loss at least this much (relative) below the average cell's


def fit_denoiser(
    counts,
    *,
    target_sum: float = 1e4,
    width: int = 256,
    max_steps: int = 3000,
    batch_size: int = 128,
    lr: float = 1e-3,
    dropout: float = 0.1,
    neighbours: int = 15,
    patience: int = 8,
    bottleneck: int | None = None,
    seed: int = 0,
    progress: bool = False,
    desc: str = "training",
) -> tuple[Callable, SplitFit]:
    """Train a count denoiser on ``counts`` (cells x genes, raw): returns ``(expression,
    fit)``, where ``expression(counts)`` gives cells' expected expression per
    ``target_sum`` (cells x genes) and ``fit`` the training record."""
    counts = (
        sp.csr_matrix(counts, dtype=np.float32)
        if sp.issparse(counts)
        else np.asarray(counts, dtype=np.float32)
    )
    n_cells, n_genes = counts.shape
    depth = totals(counts)
    if (depth <= 0).any():
        raise InputError(f"{int((depth <= 0).sum())} cells have no counts at all; remove them")
    gene_sums = np.asarray(counts.sum(axis=0), dtype=np.float64).ravel()
    used = np.flatnonzero(gene_sums > 0)
    sub = counts[:, used]
    log_x = np.empty((n_cells, len(used)), dtype=np.float64)
    for start in range(0, n_cells, 4096):  # moments of log-normalized values, chunked
        block = sub[start : start + 4096]
        block = block.toarray() if sp.issparse(block) else block
        log_x[start : start + 4096] = np.log1p(
            block * (target_sum / depth[start : start + 4096, None])
        )
    mean, std = log_x.mean(0), np.maximum(log_x.std(0), 0.05)
    around = Neighbours(log_x, k=neighbours, seed=seed) if neighbours else None
    del log_x
    log_d = np.log(depth)
    spread = (float(log_d.mean()), float(max(log_d.std(), 0.1)))
    feats = Features(mean, std, spread, target_sum, neighbours=around)
    share = np.log(gene_sums[used] / gene_sums.sum())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = CountDenoiser(
            len(used),
            log_share=torch.as_tensor(share),
            width=width,
            dropout=dropout,
            n_inputs=len(used) * (2 if around is not None else 1),
            bottleneck=bottleneck,
        )
        fit = fit_count_split(
            net,
            sub,
            feats,
            max_steps=max_steps,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            progress=progress,
            desc=desc,
            patience=patience,
        )

    @torch.no_grad()
    def expression(new_counts, *, same_cells: bool = True) -> np.ndarray:
        """Expected expression of cells (``same_cells``: the training cells, in order, each
        left out of its own neighbourhood)."""
        c = new_counts[:, used] if sp.issparse(new_counts) else np.asarray(new_counts)[:, used]
        out = np.zeros((c.shape[0], n_genes), dtype=np.float32)
        for start in range(0, c.shape[0], 2048):
            block = c[start : start + 2048]
            block = torch.as_tensor(
                block.toarray() if sp.issparse(block) else block, dtype=torch.float32
            )
            cells = torch.arange(start, start + len(block)) if same_cells else None
            rho = torch.softmax(net(*feats(block, cells)), dim=1)
            out[start : start + 2048, used] = (rho * target_sum).numpy()
        return out

    return expression, fit


def fit_denoisers(
    counts, *, n_models: int = 3, seed: int = 0, **kwargs
) -> tuple[Callable, list[SplitFit]]:
    """An ensemble of :func:`fit_denoiser`: ``n_models`` networks, model ``i`` seeded with
    ``seed + 100 * i`` (its own held-out cells, splits, minibatches and initial weights);
    ``expression(counts)`` is the mean of their expected expressions. Returns
    ``(expression, fits)``; ``n_models=1`` is :func:`fit_denoiser` itself."""
    if n_models < 1:
        raise InputError(f"n_models must be at least 1, got {n_models}")
    members = [
        fit_denoiser(
            counts,
            seed=seed + 100 * i,
            desc=f"training {i + 1}/{n_models}" if n_models > 1 else "training",
            **kwargs,
        )
        for i in range(n_models)
    ]

    def expression(new_counts, *, same_cells: bool = True) -> np.ndarray:
        """Mean expected expression of cells over the models (see :func:`fit_denoiser`)."""
        total = members[0][0](new_counts, same_cells=same_cells)
        for member, _ in members[1:]:
            total += member(new_counts, same_cells=same_cells)
        return total / n_models if n_models > 1 else total

    return expression, [fit for _, fit in members]


def denoise(
    adata: ad.AnnData,
    *,
    layer: str | None = None,
    key_added: str = "rnadiff_denoised",
    inplace: bool = True,
    target_sum: float = 1e4,
    width: int = 256,
    max_steps: int = 3000,
    batch_size: int = 128,
    n_models: int = 3,
    seed: int = 0,
    progress: bool = True,
) -> ad.AnnData | None:
    """Denoise cells' counts with a network trained on the cells themselves (no reference).

    Each cell's UMIs are split at random into two parts, ``X = X' + X''`` (each UMI in ``X'``
    with probability ``p ~ U(0.4, 0.9)``); a network (:class:`rnadiff.networks.CountDenoiser`)
    learns to predict the genes of the ``X''`` UMIs from ``X'``, by the cross-entropy
    ``-sum_g X''_g log rho_g(X')``. For Poisson counts the two parts are independent given the
    cell, so the best prediction is the cell's expected expression ``rho``, not its noisy
    counts (molecular cross-validation, Batson et al. 2019; Noise2Self, Batson & Royer 2019).
    10% of the cells are held out to stop training and keep the best weights; then every cell
    is denoised from all its counts: ``log1p(target_sum * rho)``. ``n_models`` networks are
    trained this way, each with its own seed (held-out cells, splits, initial weights), and
    ``rho`` is their mean: an ensemble, whose lower variance gave a lower held-out loss and
    better gene-gene correlations than one network on every dataset of the study that chose
    it (``benchmarks/results/studies/denoise_lowrank``).

    Parameters
    ----------
    adata
        Cells x genes with raw counts (integers) in ``X`` or ``layer``; at least 20 cells.
    layer
        Layer holding the counts (default: ``X``, or when ``X`` holds other values the raw
        counts beside it, as in training: a layer named ``counts``, ``raw_counts`` or
        ``umi_counts``, or ``adata.raw``; the log says which).
    key_added
        Layer (and ``uns`` key) written.
    inplace
        Write into ``adata``; ``False``: into a copy, returned.
    target_sum
        Counts per cell of the normalized output.
    width
        Hidden width of the network (bounds how much it can say about a cell).
    max_steps, batch_size
        Training length at most (it stops earlier when the held-out cells stop improving)
        and cells per step, of each network.
    n_models
        Networks trained and averaged (1: a single network, faster; the time grows with it).
    seed
        Seed of the networks, the splits and the held-out cells (network ``i``:
        ``seed + 100 * i``).
    progress
        Show a progress bar.

    Returns
    -------
    AnnData or None
        ``None`` (``inplace``) or the copy. Written: ``layers[key_added]``, natural
        ``log1p`` of each cell's expected expression per ``target_sum`` counts, every gene
        (0 for genes without counts); ``uns[key_added]``: the method, its settings and the
        training record (``baseline_loss``: held-out cross-entropy per UMI of the average
        cell, ``best_loss``, ``gain``: means over the networks; ``steps``: all networks'
        steps; ``best_step``: the mean; each network's under ``models``). Nothing else of
        the input changes.

    Examples
    --------
    >>> rnadiff.denoise(adata)  # adata.X: raw counts
    >>> adata.layers["rnadiff_denoised"]
    """
    check_cells(adata, "adata")
    if not inplace:
        adata = adata.copy()
    elif key_added in adata.layers:
        raise InputError(f"adata.layers[{key_added!r}] exists; give another key_added")
    if adata.n_obs < MIN_CELLS:
        raise InputError(
            f"self-supervised denoising needs at least {MIN_CELLS} cells to learn from, got "
            f"{adata.n_obs}; denoise with a reference model (RNADiffusion.denoise) instead"
        )
    # X, or the raw counts beside log values in X (a counts layer, adata.raw), as training
    source, found = choose_source(adata, layer=layer)
    counts, names = matrix(adata, source)
    if adata.isbacked:
        counts = counts[:]
    if source.use_raw:  # adata.raw may hold more genes than adata: adata's, in its order
        counts = counts[:, pd.Index(names).get_indexer(adata.var_names)]
    if found.kind != "counts":
        raise InputError(
            f"self-supervised denoising needs raw counts (integers): it splits each cell's "
            f"UMIs; {source.what} holds other values (give the layer of raw counts with "
            "layer=...)"
        )
    expression, fits = fit_denoisers(
        counts,
        n_models=n_models,
        target_sum=target_sum,
        width=width,
        max_steps=max_steps,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
    )
    best = float(np.mean([f.best_loss for f in fits]))
    baseline = float(np.mean([f.baseline_loss for f in fits]))
    gain = float(np.mean([f.gain for f in fits]))
    if not np.isfinite(best):
        raise InputError("self-supervised denoising failed: the training loss is not finite")
    if gain < MIN_GAIN:
        logger.warning(
            "rnadiff: the denoiser learned nothing beyond the average cell (held-out loss "
            "%.4f vs %.4f for the average cell): the counts are too shallow or the cells too "
            "alike; layers[%r] holds close to the average cell",
            best,
            baseline,
            key_added,
        )
    adata.layers[key_added] = np.log1p(expression(counts)).astype(np.float32)
    adata.uns[key_added] = {
        "method": "self-supervised (binomial split of each cell's UMIs)",
        "layer": source.layer,
        "use_raw": source.use_raw,
        "target_sum": target_sum,
        "width": width,
        "seed": seed,
        "n_models": n_models,
        "baseline_loss": baseline,
        "best_loss": best,
        "gain": gain,
        "steps": int(sum(f.steps for f in fits)),
        "best_step": round(float(np.mean([f.best_step for f in fits]))),
        "models": {
            "seed": [seed + 100 * i for i in range(n_models)],
            "baseline_loss": [f.baseline_loss for f in fits],
            "best_loss": [f.best_loss for f in fits],
            "steps": [f.steps for f in fits],
            "best_step": [f.best_step for f in fits],
        },
    }
    return None if inplace else adata
