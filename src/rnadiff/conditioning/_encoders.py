"""Covariate encoders: each maps one condition tensor to an embedding, with a learned null."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from rnadiff.conditioning._nulls import is_null

SLOPE_AT_INIT = 1.5  # Hill slope in standardized log dose before training


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


@dataclass(frozen=True)
class DoseScale:
    """How the dose condition (standardized ``log1p`` dose) maps back to a dose, and the
    reference scale of log dose for the Hill curve (mean and sd of the positive training
    doses' logs)."""

    mean: float = 0.0
    std: float = 1.0
    log_center: float = 0.0
    log_scale: float = 1.0

    def z(self, encoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(standardized log dose, dose > 0)`` of encoded dose values (NaN: unknown)."""
        dose = torch.expm1(encoded * self.std + self.mean)
        positive = dose > 1e-12
        safe = torch.where(positive, dose, torch.ones_like(dose))
        return (torch.log(safe) - self.log_center) / self.log_scale, positive


@dataclass(frozen=True)
class PerturbationSpec:
    """What the perturbation's encoder needs beyond a token count.

    Attributes
    ----------
    key
        The perturbation covariate.
    feature_dims
        ``{kind: width}`` of token features: ``"molecule"`` (fingerprints), ``"gene"``
        (gene embeddings).
    dose_key
        The dose covariate whose value scales dosed tokens (None: no dose-response).
    dose
        How to read the dose condition.
    dose_embedding
        Whether the dose also has its own embedding (besides the Hill scaling).
    control
        Position of the control token (the reference of dosed tokens' effects).
    unknown_learned
        Whether a dosed token with an unknown dose takes a learned Hill level (else 1).
    """

    key: str
    feature_dims: Mapping[str, int] = field(default_factory=dict)
    dose_key: str | None = None
    dose: DoseScale | None = None
    dose_embedding: bool = True
    control: int | None = None
    unknown_learned: bool = False


class PerturbationEmbedding(SetEmbedding):
    r"""Embedding of the perturbation covariate: each token's vector is learned, or computed
    from its features (a drug's fingerprint, a gene's embedding) by a learned projection, so
    that a token never seen in training gets a vector from its features.

    With a dose (Hill dose-response, as CPA): a token measured at a positive dose acts as a
    displacement from the control, scaled by a Hill curve of log dose,

    .. math::

        e(p, d) = e_{\mathrm{ctrl}} + \sum_{t \in p} h_t(d)\, e_t, \qquad
        h_t(d) = \sigma\big(s_t (z(d) - c_t)\big), \quad
        z(d) = (\log d - \bar\ell) / s_\ell,

    with ``h = 0`` at dose 0 (the control exactly); for an unknown dose (dropped in training
    for classifier-free guidance, or not given) ``h = \sigma(u_t)``, a level learned per token
    (the drug's effect over its measured doses), or ``h = 1`` (``unknown_learned=False``,
    models before it);
    ``s_t = softplus(.) > 0`` makes the effect's size monotone in dose. ``(s_t, c_t)`` are
    learned per token, or computed from a featured token's vector (so an unseen drug has a
    curve too).
    """

    def __init__(self, n_tokens: int, dim: int, spec: PerturbationSpec):
        super().__init__(n_tokens, dim)
        self.kinds = tuple(sorted(spec.feature_dims))
        self.project = nn.ModuleDict(
            {
                k: nn.Sequential(nn.Linear(w, dim), nn.SiLU(), nn.Linear(dim, dim))
                for k, w in sorted(spec.feature_dims.items())
            }
        )
        for kind, width in sorted(spec.feature_dims.items()):
            self.register_buffer(f"features_{kind}", torch.zeros(n_tokens, width))
            self.register_buffer(f"has_{kind}", torch.zeros(n_tokens, dtype=torch.bool))
        self.dose, self.control = spec.dose, spec.control
        if spec.dose is not None:
            self.register_buffer("dosed", torch.zeros(n_tokens, dtype=torch.bool))
            slope = math.log(math.expm1(SLOPE_AT_INIT))  # softplus^-1
            self.hill = nn.Parameter(torch.tensor([[slope, 0.0]]).repeat(n_tokens, 1))
            self.hill_head = nn.Linear(dim, 2)
            nn.init.zeros_(self.hill_head.weight)
            with torch.no_grad():
                self.hill_head.bias.copy_(torch.tensor([slope, 0.0]))
            self.unknown_learned = spec.unknown_learned
            if spec.unknown_learned:  # logit of the unknown dose's Hill level, 0.5 at init
                self.unknown = nn.Parameter(torch.zeros(n_tokens))
                self.unknown_head = nn.Linear(dim, 1)
                nn.init.zeros_(self.unknown_head.weight)
                nn.init.zeros_(self.unknown_head.bias)
        self.extra: dict[str, torch.Tensor] = {}  # tokens added after training (extended)

    def set_features(self, kind: str, features: torch.Tensor, has: torch.Tensor) -> None:
        """Set the training tokens' features of ``kind`` (rows where ``has`` is False are
        learned tokens)."""
        getattr(self, f"features_{kind}").copy_(features)
        getattr(self, f"has_{kind}").copy_(has)

    def extended(
        self,
        features: Mapping[str, torch.Tensor],
        has: Mapping[str, torch.Tensor],
        dosed: torch.Tensor,
    ) -> PerturbationEmbedding:
        """A view of this embedding that also knows ``len(dosed)`` tokens appended after the
        training ones, described by their features only (shares every parameter)."""
        new = copy.copy(self)
        new.extra = {"dosed": dosed.bool()}
        for kind in self.kinds:
            new.extra[f"features_{kind}"] = features[kind].float()
            new.extra[f"has_{kind}"] = has[kind].bool()
        return new

    def _all(self, name: str) -> torch.Tensor:
        own = getattr(self, name)
        return torch.cat([own, self.extra[name].to(own.device)]) if self.extra else own

    def table(
        self, used: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Every token's vector (rows of unused tokens: their learned ones, or zeros) and,
        with a dose, every token's Hill ``(slope, midpoint)`` and the logit of its level at
        an unknown dose (None: 1)."""
        n_extra = len(self.extra["dosed"]) if self.extra else 0
        table = self.weight
        if n_extra:
            table = torch.cat([table, table.new_zeros(n_extra, table.shape[1])])
        hill = unknown = None
        if self.dose is not None:
            hill = self.hill
            if n_extra:
                hill = torch.cat([hill, hill[:1].detach().expand(n_extra, 2)])
            if self.unknown_learned:
                unknown = self.unknown
                if n_extra:
                    unknown = torch.cat([unknown, unknown[:1].detach().expand(n_extra)])
        for kind in self.kinds:
            rows = torch.nonzero(self._all(f"has_{kind}") & used).flatten()
            if len(rows):
                vectors = self.project[kind](self._all(f"features_{kind}")[rows])
                table = table.index_copy(0, rows, vectors)
                if hill is not None:
                    hill = hill.index_copy(0, rows, self.hill_head(vectors))
                if unknown is not None:
                    unknown = unknown.index_copy(0, rows, self.unknown_head(vectors)[:, 0])
        return table, hill, unknown

    def forward(self, multi_hot: torch.Tensor, dose: torch.Tensor | None = None) -> torch.Tensor:
        used = (multi_hot != 0).any(dim=0)
        table, hill, unknown = self.table(used)
        weights = multi_hot
        if hill is not None and dose is not None:
            z, positive = self.dose.z(dose.to(multi_hot.dtype))
            slope, mid = F.softplus(hill[:, 0]), hill[:, 1]
            h = torch.sigmoid(slope[None, :] * (z[:, None] - mid[None, :]))
            h = torch.where(positive[:, None], h, torch.zeros_like(h))
            at_unknown = torch.ones_like(h) if unknown is None else torch.sigmoid(unknown)[None, :]
            h = torch.where(torch.isnan(dose)[:, None], at_unknown.expand_as(h), h)
            dosed = self._all("dosed")
            weights = torch.where(dosed[None, :], multi_hot * h, multi_hot)
            if self.control is not None:  # dosed tokens are displacements from the control
                has_dosed = (multi_hot[:, dosed] != 0).any(dim=1).to(weights.dtype)
                reference = torch.zeros_like(weights)
                reference[:, self.control] = has_dosed
                weights = weights + reference * (multi_hot[:, self.control : self.control + 1] == 0)
        emb = weights @ table
        return torch.where(is_null(multi_hot)[:, None], self.null.expand_as(emb), emb)


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
    perturbation
        The perturbation covariate's features and dose-response
        (:class:`PerturbationEmbedding`); None: a plain :class:`SetEmbedding`.
    """

    def __init__(
        self,
        categorical: dict[str, int],
        continuous: list[str],
        dim: int,
        *,
        perturbation: PerturbationSpec | None = None,
    ):
        super().__init__()
        spec = perturbation
        encoders: dict[str, nn.Module] = {
            k: PerturbationEmbedding(n, dim, spec)
            if spec is not None and k == spec.key
            else SetEmbedding(n, dim)
            for k, n in categorical.items()
        }
        silent = {spec.dose_key} if spec and spec.dose and not spec.dose_embedding else set()
        encoders.update({k: FourierEmbedding(dim) for k in continuous if k not in silent})
        self.encoders = nn.ModuleDict(encoders)
        self.dim = dim
        self.dose_key = spec.dose_key if spec is not None and spec.dose is not None else None
        self.required = set(categorical) | set(continuous)

    def forward(self, cond: dict[str, torch.Tensor] | None, n: int) -> torch.Tensor:
        out = torch.zeros(n, self.dim, device=self.device)
        cond = cond or {}
        missing = self.required - set(cond)
        if missing:
            raise KeyError(f"condition lacks covariates {sorted(missing)}")
        for key, encoder in self.encoders.items():
            if isinstance(encoder, PerturbationEmbedding) and self.dose_key is not None:
                out = out + encoder(cond[key].to(out.device), cond[self.dose_key].to(out.device))
            else:
                out = out + encoder(cond[key].to(out.device))
        return out

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device if len(self.encoders) else torch.device("cpu")
