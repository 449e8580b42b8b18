"""Sequencing-depth corruption for training: binomial thinning of a cell's counts.

A cell's counts thinned at rate ``r`` (each UMI kept with probability ``r``) are what the same
cell would have given at ``r`` times its depth. Trained on such pairs, the denoiser learns
``E[x0 | shallower cell]``, the estimate :meth:`rnadiff.RNADiffusion.denoise` needs. The thinned
cell enters the usual denoising loss as ``x0 + sigma * noise`` with ``noise = (x_thin - x0) /
sigma`` and ``sigma`` the counting noise added by the thinning
(:func:`rnadiff.diffusion._count_noise.error_curve`), so the loss and its weighting stay as
they are.
"""

from __future__ import annotations

import numpy as np
import torch

from rnadiff.diffusion._count_noise import error_curve


class CountThinning:
    """Replace the Gaussian corruption of a fraction of each batch by count thinning.

    Parameters
    ----------
    counts
        Raw counts of the model's genes for every training cell, ``(n_cells, n_genes)``.
    totals
        Each training cell's total counts over all its genes (its depth).
    mean, std
        The model's per-gene centring and scale of log values.
    expr_mean
        Mean expression per ``target_sum`` counts of each gene (for the noise level).
    target_sum
        The normalization total of preprocessing.
    fraction
        Share of each batch corrupted by thinning (the rest keeps Gaussian noise).
    min_rate, max_rate
        Thinning rates are log-uniform between these.
    floor
        Smallest noise level given to a thinned cell.
    """

    def __init__(
        self,
        counts: np.ndarray,
        totals: np.ndarray,
        *,
        mean: np.ndarray,
        std: np.ndarray,
        expr_mean: np.ndarray,
        target_sum: float,
        fraction: float,
        min_rate: float = 0.02,
        max_rate: float = 0.5,
        floor: float = 0.05,
    ):
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        if not 0 < min_rate < max_rate <= 1:
            raise ValueError("need 0 < min_rate < max_rate <= 1")
        totals = np.asarray(totals, dtype=np.float64)
        if (totals <= 0).any():
            raise ValueError("every cell needs counts")
        # a matrix of counts, or a function of cell indices giving theirs (read from disk)
        self.counts = (
            counts if callable(counts) else torch.as_tensor(np.asarray(counts, dtype=np.float32))
        )
        self.totals = torch.as_tensor(totals)
        self.mean = torch.as_tensor(np.asarray(mean, dtype=np.float32))
        self.std = torch.as_tensor(np.asarray(std, dtype=np.float32))
        self.target_sum = float(target_sum)
        self.fraction, self.floor = float(fraction), float(floor)
        self.log_rates = (float(np.log(min_rate)), float(np.log(max_rate)))
        grid, values = error_curve(
            expr_mean,
            std,
            lo=max(1.0, totals.min() * min_rate * 0.5),
            hi=totals.max(),
            target_sum=target_sum,
        )
        self.log_grid = torch.as_tensor(np.log(grid))
        self.values = torch.as_tensor(values)

    def _error(self, depth: torch.Tensor) -> torch.Tensor:
        """The mean counting error at ``depth`` (interpolated on the precomputed grid)."""
        x = depth.log().clamp(self.log_grid[0], self.log_grid[-1])
        i = torch.searchsorted(self.log_grid, x).clamp(1, len(self.log_grid) - 1)
        x0, x1 = self.log_grid[i - 1], self.log_grid[i]
        w = (x - x0) / (x1 - x0)
        return self.values[i - 1] * (1 - w) + self.values[i] * w

    def __call__(
        self,
        idx: torch.Tensor,
        x0: torch.Tensor,
        sigma: torch.Tensor,
        noise: torch.Tensor,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pick = torch.rand(len(idx), generator=generator) < self.fraction
        if not pick.any():
            return sigma, noise
        rows = idx[pick]
        lo, hi = self.log_rates
        rate = torch.exp(lo + (hi - lo) * torch.rand(len(rows), generator=generator))
        counts = (
            torch.as_tensor(self.counts(rows.numpy()), dtype=torch.float32)
            if callable(self.counts)
            else self.counts[rows]
        )
        kept = torch.binomial(counts, rate[:, None].expand_as(counts), generator=generator)
        total = torch.binomial(self.totals[rows], rate.double(), generator=generator)
        total = torch.maximum(total, kept.sum(1).double()).clamp_min(1.0)
        log_x = torch.log1p(kept.double() * (self.target_sum / total)[:, None]).float()
        z = (log_x - self.mean) / self.std
        added = self._error(total) - self._error(self.totals[rows])
        s = added.clamp_min(self.floor**2).sqrt().float()
        sigma, noise = sigma.clone(), noise.clone()
        sigma[pick] = s
        noise[pick] = (z - x0[pick]) / s[:, None]
        return sigma, noise
