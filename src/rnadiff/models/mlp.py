"""Residual MLP with adaptive layer norm: the denoiser's network for expression profiles."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AdaLNBlock(nn.Module):
    """Pre-norm residual MLP block modulated by an embedding (adaLN-Zero, Peebles & Xie 2023).

    The embedding sets a shift, a scale and a gate per feature; the gate starts at zero so each
    block starts as the identity and training is stable from the first step.
    """

    def __init__(self, width: int, emb_dim: int, *, expansion: int = 2, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.modulation = nn.Linear(emb_dim, 3 * width)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)
        self.fc1 = nn.Linear(width, expansion * width)
        self.fc2 = nn.Linear(expansion * width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(emb).chunk(3, dim=1)
        y = self.norm(h) * (1 + scale) + shift
        y = self.fc2(self.dropout(F.silu(self.fc1(y))))
        return h + gate * y


class ResidualMLP(nn.Module):
    """``F(x, emb)``: input projection, ``depth`` adaLN residual blocks, modulated output layer.

    Parameters
    ----------
    n_genes
        Width of the input and output profiles.
    width
        Hidden width.
    depth
        Number of residual blocks.
    emb_dim
        Width of the condition + noise-level embedding.
    dropout
        Dropout inside the blocks.
    """

    def __init__(self, n_genes: int, *, width: int, depth: int, emb_dim: int, dropout: float):
        super().__init__()
        self.proj_in = nn.Linear(n_genes, width)
        self.blocks = nn.ModuleList(
            AdaLNBlock(width, emb_dim, dropout=dropout) for _ in range(depth)
        )
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False)
        self.modulation_out = nn.Linear(emb_dim, 2 * width)
        nn.init.zeros_(self.modulation_out.weight)
        nn.init.zeros_(self.modulation_out.bias)
        self.proj_out = nn.Linear(width, n_genes)
        # Zero output: the EDM denoiser starts as c_skip * x, the best guess without training.
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # The embedding enters every modulation linearly (no activation in between): covariate
        # embeddings are summed, so each covariate shifts the modulations additively. Measured
        # on Kang 2018 (held-out stimulated CD14+ monocytes), this generalizes to unseen
        # perturbation x cell type combinations better than SiLU(emb) as in DiT.
        h = self.proj_in(x)
        for block in self.blocks:
            h = block(h, emb)
        shift, scale = self.modulation_out(emb).chunk(2, dim=1)
        return self.proj_out(self.norm_out(h) * (1 + scale) + shift)
