"""The EDM-preconditioned conditional denoiser ``D(x, sigma, cond) -> x0_hat``."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn

from rnadiff._config import NetworkConfig
from rnadiff.conditioning import ConditionEncoder, FourierEmbedding, PerturbationSpec
from rnadiff.diffusion import edm_scalings
from rnadiff.networks._mlp import ResidualMLP


class Denoiser(nn.Module):
    """Conditional denoiser with EDM preconditioning (Karras et al. 2022, eq. 7).

    Parameters
    ----------
    n_genes
        Number of genes in a profile.
    categorical
        ``{covariate: n_tokens}`` of the categorical covariates.
    continuous
        Names of the continuous covariates.
    config
        Network sizes.
    sigma_data
        Standard deviation of the (scaled) training data.
    perturbation
        Features and dose-response of the perturbation covariate (None: plain tokens).
    """

    def __init__(
        self,
        n_genes: int,
        *,
        categorical: dict[str, int],
        continuous: list[str],
        config: NetworkConfig,
        sigma_data: float,
        perturbation: PerturbationSpec | None = None,
    ):
        super().__init__()
        self.sigma_data = sigma_data
        self.cond_encoder = ConditionEncoder(
            categorical, continuous, config.emb_dim, perturbation=perturbation
        )
        self.noise_encoder = FourierEmbedding(config.emb_dim)
        self.net = ResidualMLP(
            n_genes,
            width=config.width,
            depth=config.depth,
            emb_dim=config.emb_dim,
            dropout=config.dropout,
        )

    def forward(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        sigma = sigma.to(x.dtype).reshape(-1)
        c_skip, c_out, c_in, c_noise = edm_scalings(sigma, self.sigma_data)
        emb = self.cond_encoder(cond, x.shape[0]) + self.noise_encoder(c_noise)
        out = self.net(c_in[:, None] * x, emb)
        return c_skip[:, None] * x + c_out[:, None] * out

    def with_extra_tokens(
        self,
        key: str,
        features: Mapping[str, torch.Tensor],
        has: Mapping[str, torch.Tensor],
        dosed: torch.Tensor,
    ) -> Denoiser:
        """A view of this denoiser whose covariate ``key`` also knows tokens appended after
        the training ones, described by their features (drugs never seen, by structure;
        genes, by their embeddings). Every parameter is shared; nothing of ``self`` changes."""
        encoder = self.cond_encoder.encoders[key].extended(features, has, dosed)
        encoders = copy.copy(self.cond_encoder.encoders)
        encoders._modules = dict(encoders._modules) | {key: encoder}
        cond_encoder = copy.copy(self.cond_encoder)
        cond_encoder._modules = dict(cond_encoder._modules) | {"encoders": encoders}
        new = copy.copy(self)
        new._modules = dict(self._modules) | {"cond_encoder": cond_encoder}
        return new
