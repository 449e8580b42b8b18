"""The EDM-preconditioned conditional denoiser ``D(x, sigma, cond) -> x0_hat``."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn

from rnadiff._config import NetworkConfig
from rnadiff.conditioning import ConditionEncoder, FourierEmbedding, PerturbationSpec
from rnadiff.diffusion import edm_scalings
from rnadiff.networks._mlp import MLPEnsemble, ResidualMLP


class Denoiser(nn.Module):
    """Conditional denoiser with EDM preconditioning (Karras et al. 2022, eq. 7).

    With ``config.n_models = K > 1`` the network is an ensemble of ``K`` residual MLPs
    ``F_k`` sharing the condition and noise-level embeddings, and

    .. math::

        D(x, \\sigma) = c_{skip} x + c_{out} \\frac{1}{K} \\sum_k F_k(c_{in} x, e),
        \\qquad D_k(x, \\sigma) = c_{skip} x + c_{out} F_k(c_{in} x, e),

    the mean of the members' denoisers; each member is trained on its own denoising loss
    (``forward(..., each=True)`` gives the ``D_k``), so the members do not co-adapt and
    their mean has a lower variance than one of them.

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
        sizes = dict(
            width=config.width, depth=config.depth, emb_dim=config.emb_dim, dropout=config.dropout
        )
        self.n_models = config.n_models
        self.net = (
            MLPEnsemble(n_genes, config.n_models, **sizes)
            if config.n_models > 1
            else ResidualMLP(n_genes, **sizes)
        )

    def forward(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        cond: dict[str, torch.Tensor] | None = None,
        *,
        each: bool = False,
    ) -> torch.Tensor:
        """``D(x, sigma, cond)``, shape of ``x``; ``each`` (an ensemble): every member's
        ``D_k``, shape ``(n_models, *x.shape)`` (one network: the same as without)."""
        sigma = sigma.to(x.dtype).reshape(-1)
        c_skip, c_out, c_in, c_noise = edm_scalings(sigma, self.sigma_data)
        emb = self.cond_encoder(cond, x.shape[0]) + self.noise_encoder(c_noise)
        out = self.net(c_in[:, None] * x, emb)
        if self.n_models > 1 and not each:
            out = out.mean(dim=0)
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
