"""Covariate encoders: each maps one condition tensor to an embedding, with a learned null."""

from __future__ import annotations

import math

import torch
from torch import nn

from rnadiff.conditioning._nulls import is_null


class SetEmbedding(nn.Module):
    """Embedding of a categorical covariate given as a multi-hot matrix.

    A single value is a one-hot row; a combination ``A+B`` is the sum of its parts' embeddings,
    so combinations never seen together in training still have an embedding. An all-zero row
    (dropped or unknown) takes a learned null embedding instead.
    """

    def __init__(self, n_tokens: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_tokens, dim) / math.sqrt(dim))
        self.null = nn.Parameter(torch.zeros(dim))

    def forward(self, multi_hot: torch.Tensor) -> torch.Tensor:
        emb = multi_hot @ self.weight
        return torch.where(is_null(multi_hot)[:, None], self.null.expand_as(emb), emb)


class FourierEmbedding(nn.Module):
    """Embedding of a (standardized) continuous covariate such as log-dose or time.

    Fixed log-spaced Fourier features (Tancik et al. 2020) followed by a small MLP; NaN (dropped
    or missing) takes a learned null embedding.
    """

    def __init__(self, dim: int, n_frequencies: int = 16, max_frequency: float = 16.0):
        super().__init__()
        freqs = torch.logspace(0, math.log10(max_frequency), n_frequencies) * math.pi / 4
        self.register_buffer("freqs", freqs)
        self.mlp = nn.Sequential(
            nn.Linear(2 * n_frequencies + 1, dim), nn.SiLU(), nn.Linear(dim, dim)
        )
        self.null = nn.Parameter(torch.zeros(dim))

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        null = is_null(value)
        v = torch.where(null, torch.zeros_like(value), value)[:, None]
        feats = torch.cat([v, torch.sin(v * self.freqs), torch.cos(v * self.freqs)], dim=1)
        emb = self.mlp(feats)
        return torch.where(null[:, None], self.null.expand_as(emb), emb)


class ConditionEncoder(nn.Module):
    """Sum of one encoder per covariate.

    Parameters
    ----------
    categorical
        ``{name: n_tokens}`` for each categorical covariate (multi-hot input).
    continuous
        Names of continuous covariates (vector input, standardized).
    dim
        Embedding width.
    """

    def __init__(self, categorical: dict[str, int], continuous: list[str], dim: int):
        super().__init__()
        encoders: dict[str, nn.Module] = {k: SetEmbedding(n, dim) for k, n in categorical.items()}
        encoders.update({k: FourierEmbedding(dim) for k in continuous})
        self.encoders = nn.ModuleDict(encoders)
        self.dim = dim

    def forward(self, cond: dict[str, torch.Tensor] | None, n: int) -> torch.Tensor:
        out = torch.zeros(n, self.dim, device=self.device)
        cond = cond or {}
        missing = set(self.encoders) - set(cond)
        if missing:
            raise KeyError(f"condition lacks covariates {sorted(missing)}")
        for key, encoder in self.encoders.items():
            out = out + encoder(cond[key].to(out.device))
        return out

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device if len(self.encoders) else torch.device("cpu")
