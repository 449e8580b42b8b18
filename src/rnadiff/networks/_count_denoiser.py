"""The network of self-supervised denoising: a cell's counts -> its expected expression."""

from __future__ import annotations

import torch
from torch import nn

from rnadiff.conditioning import FourierEmbedding
from rnadiff.networks._mlp import ResidualMLP


class CountDenoiser(nn.Module):
    """``logits = F(x, depth)``: the log of each gene's share of a cell's expression.

    ``softmax(logits)`` is the cell's expected expression per count (scVI's normalized
    expression), estimated from its log-normalized, per-gene scaled counts ``x`` and its
    depth. The residual MLP's width bounds the rank of what it can say about a cell, which is
    how it shrinks counting noise.

    Parameters
    ----------
    n_genes
        Genes in and out.
    log_share
        Initial logits: the log share of each gene in the training counts, so the untrained
        network predicts the average cell.
    width, depth, emb_dim, dropout
        Sizes of the residual MLP (:class:`rnadiff.networks.ResidualMLP`) and of the depth
        embedding.
    n_inputs
        Input features per cell (default ``n_genes``; ``2 * n_genes`` with the neighbourhood
        mean beside the cell's own values).
    bottleneck
        Rank of the read-out (None: ``width``): the last hidden layer passes through
        ``bottleneck`` linear units before the genes' logits, so that a cell's logits lie
        in a ``bottleneck``-dimensional space around ``log_share``.
    """

    def __init__(
        self,
        n_genes: int,
        *,
        log_share: torch.Tensor | None = None,
        width: int = 256,
        depth: int = 2,
        emb_dim: int = 64,
        dropout: float = 0.1,
        n_inputs: int | None = None,
        bottleneck: int | None = None,
    ):
        super().__init__()
        self.depth_encoder = FourierEmbedding(emb_dim)  # standardized log depth
        self.net = ResidualMLP(n_genes, width=width, depth=depth, emb_dim=emb_dim, dropout=dropout)
        if n_inputs is not None and n_inputs != n_genes:  # its first layer takes the inputs
            self.net.proj_in = nn.Linear(n_inputs, width)
        if bottleneck is not None:
            if not 1 <= bottleneck < width:
                raise ValueError(f"bottleneck must be between 1 and width - 1, got {bottleneck}")
            out = nn.Linear(bottleneck, n_genes)
            nn.init.zeros_(out.weight)
            nn.init.zeros_(out.bias)
            self.net.proj_out = nn.Sequential(nn.Linear(width, bottleneck), out)
        start = torch.zeros(n_genes) if log_share is None else torch.as_tensor(log_share)
        self.log_share = nn.Parameter(start.float().clone())

    def forward(self, x: torch.Tensor, log_depth: torch.Tensor) -> torch.Tensor:
        """Logits ``(n_cells, n_genes)`` of the cells ``x`` at (standardized) log depths."""
        return self.log_share + self.net(x, self.depth_encoder(log_depth.reshape(-1)))
