"""The sampling engine: a trained denoiser and what it knows, turned into batched sampler runs.

:class:`SamplingEngine` holds the EMA network with everything sampling needs to know about the
training data (covariate registry, gene scaling, the conditions measured, the continuous values
measured, calibrated effect scales, the expression prior of unseen perturbations) and builds,
for each batch of cells, the stack of denoiser wrappers that a request needs: interpolation
between measured values of a continuous covariate, classifier-free guidance, calibrated effect
scaling, and the transfer of a perturbation to a context where it was never measured. Samplers
stay plain functions (:mod:`rnadiff.sampling._samplers`). The user's model
(:class:`rnadiff.RNADiffusion`) and the design and ranking workflows (:mod:`rnadiff.design`)
both drive sampling through this object; it works on tensors, arrays and ``obs`` tables,
never on AnnData. Pieces of their own beside it: the interpolation plan
(:mod:`rnadiff.sampling._interpolation`), views that know perturbations by their features
(:mod:`rnadiff.sampling._known`), and the transfer plan, its scales and its record
(:mod:`rnadiff.sampling._transfer_plan`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from rnadiff._config import DiffusionConfig
from rnadiff._errors import InputError
from rnadiff.conditioning import _conditions as conditions
from rnadiff.conditioning._anchors import Anchors
from rnadiff.conditioning._calibration import cell_effect_scales
from rnadiff.conditioning._features import TokenFeatures
from rnadiff.conditioning._prior import prior_weights, soft_prior
from rnadiff.data._covariates import CovariateRegistry
from rnadiff.data._preprocessing import PreprocessState, scale, unscale
from rnadiff.diffusion import karras_sigmas
from rnadiff.sampling import _known, _transfer_plan
from rnadiff.sampling._guidance import (
    classifier_free_guidance,
    combination_composition,
    composed_transfer,
    effect_scaling,
    interpolated_covariate,
)
from rnadiff.sampling._interpolation import interpolation_plan, outside_range
from rnadiff.sampling._inversion import encode
from rnadiff.sampling._samplers import SAMPLERS
from rnadiff.sampling._transfer_plan import TransferPlan, transfer_scale

logger = logging.getLogger("rnadiff")

Guidance = float | Mapping[str, float]
KEEP_ENCODING_MAX = 2**26  # values of the last encoding kept (256 MB)
# the range of guidance a user may ask for: far beyond it every output is off the data, and
# large enough scales overflow to non-finite cells
GUIDANCE_RANGE = (-20.0, 50.0)


class _OnDevice:
    """``denoiser(x, sigma, cond)`` run on ``device``, CPU tensors in and out."""

    def __init__(self, module: nn.Module, device: torch.device):
        self.module, self.device = module, device

    def __call__(self, x, sigma, cond=None):
        d = self.device
        cond = None if cond is None else {k: v.to(d, non_blocking=True) for k, v in cond.items()}
        return self.module(x.to(d, non_blocking=True), sigma.to(d), cond).to("cpu")


@dataclass
class SamplingEngine:
    """A trained denoiser and what sampling needs to know about its training data.

    Parameters
    ----------
    denoiser
        The EMA network ``denoiser(x, sigma, cond) -> x0_hat`` in the model's space.
    registry
        The covariates and how they are encoded.
    preprocess
        The gene scaling (model space <-> log expression).
    diffusion
        Noise levels and ``sigma_data``.
    seen
        Categorical conditions measured in training.
    measured, measured_within
        Training values of each continuous covariate (for interpolation), overall and
        within each categorical condition (e.g. the doses of each drug).
    effect_scales
        ``{perturbation: factor}`` of the effect calibration.
    gene_vectors, prior_fit
        The expression prior of unseen perturbations (``None``: none).
    features
        What describes perturbation names by their features (drug structures, gene
        embeddings): names never seen in training but described there are embedded from
        them (:meth:`with_known`).
    """

    denoiser: nn.Module
    registry: CovariateRegistry
    preprocess: PreprocessState
    diffusion: DiffusionConfig
    seen: set[tuple] = field(default_factory=set)
    measured: dict[str, list[float]] = field(default_factory=dict)
    measured_within: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    effect_scales: dict[str, float] = field(default_factory=dict)
    gene_vectors: np.ndarray | None = None
    prior_fit: dict | None = None
    features: TokenFeatures | None = None
    base_tokens: tuple[str, ...] | None = None  # a view's perturbation tokens of training
    # the model's mean anchors (calibrate_means): their training means place each context for
    # "compose" transfer (None: the network's own estimate of each context's control)
    anchors: Anchors | None = None
    # where "compose" reads each context's control profile from: "network" (the default), the
    # network's estimate from pure noise; "data", the training mean of its control cells (the
    # anchors' levels) when every context has one. Alike on Kang's folds, a little better on
    # its inner folds (R² top-100 +0.005): benchmarks/results/studies/context_profiles
    context_profiles: str = "network"
    _last_encoding: tuple[bytes, torch.Tensor] | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ basics
    @property
    def network(self):
        """The EMA network as a denoiser of CPU tensors, wherever its weights live (on a GPU,
        inputs go there and outputs come back): guidance arithmetic stays on the CPU."""
        device = next(self.denoiser.parameters()).device
        return self.denoiser if device.type == "cpu" else _OnDevice(self.denoiser, device)

    @property
    def n_genes(self) -> int:
        return len(self.preprocess.genes)

    def to_model(self, log_x: np.ndarray) -> np.ndarray:
        """Log expression -> the model's space."""
        return scale(log_x, self.preprocess)

    def to_log(self, z: np.ndarray) -> np.ndarray:
        """The model's space -> log expression (clipped at 0)."""
        return unscale(z, self.preprocess)

    def sigmas(
        self, steps: int, *, sigma_max: float | None = None, sigma_min: float | None = None
    ) -> torch.Tensor:
        """The sampler's noise levels (Karras et al. 2022) for ``steps`` steps; a larger
        ``sigma_min`` stops early and takes the denoiser's estimate there (counts out)."""
        d = self.diffusion
        if steps < 1:
            raise InputError(f"steps must be at least 1, got {steps}")
        low = d.sigma_min if sigma_min is None else float(sigma_min)
        return karras_sigmas(steps, sigma_min=low, sigma_max=sigma_max or d.sigma_max, rho=d.rho)

    def check_sampling(self, sampler: str, guidance: Guidance) -> None:
        """A known sampler, known covariates and finite guidance weights."""
        if sampler not in SAMPLERS:
            raise InputError(f"unknown sampler {sampler!r}; choose from {sorted(SAMPLERS)}")
        if isinstance(guidance, Mapping):
            for key in guidance:
                self.registry[key]  # raises on unknown covariates
        weights = guidance.values() if isinstance(guidance, Mapping) else [guidance]
        lo, hi = GUIDANCE_RANGE
        for w in weights:
            try:
                ok = bool(lo <= float(w) <= hi)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise InputError(
                    f"guidance={w!r} is out of range: guidance weights are numbers from {lo:g} "
                    f"to {hi:g} (1: the condition as trained; beyond ~10 cells leave the data)"
                )

    @staticmethod
    def batches(n: int, batch_size: int) -> list[slice]:
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]

    # ------------------------------------------------- perturbations by features
    def with_molecules(self, table: Mapping[str, str]) -> SamplingEngine:
        """:func:`rnadiff.sampling._known.with_molecules`: drugs added by their SMILES."""
        return _known.with_molecules(self, table)

    def with_known(self, values: Iterable) -> SamplingEngine:
        """:func:`rnadiff.sampling._known.with_known`: a view that also knows the unseen
        perturbations among ``values`` that have features."""
        return _known.with_known(self, values)

    @property
    def trained_tokens(self) -> tuple[str, ...]:
        """The perturbation tokens the network was trained on."""
        if self.base_tokens is not None:
            return self.base_tokens
        pkey = self.registry.perturbation_key
        return self.registry[pkey].tokens if pkey is not None else ()

    def for_frame(self, frame: pd.DataFrame | None) -> SamplingEngine:
        """:meth:`with_known` for the perturbations of a request's ``obs`` or conditions."""
        pkey = self.registry.perturbation_key
        if frame is None or pkey is None or pkey not in frame:
            return self
        return self.with_known(frame[pkey].dropna().astype(str).unique())

    # -------------------------------------------------------------- conditions
    def cond(
        self, obs: pd.DataFrame, *, allow_missing: bool = False, soft: dict | None = None
    ) -> dict[str, torch.Tensor]:
        """Condition tensors; ``soft``: the expression prior of unseen perturbations
        (:meth:`soft_prior`); without it, an unseen perturbation is an error."""
        if soft is None:
            self.soft_prior(obs, use=False)  # names the prior when it would help
        encoded = self.registry.encode(obs, allow_missing=allow_missing, soft=soft)
        return {k: torch.from_numpy(v) for k, v in encoded.items()}

    def prior_weights(self, gene: str) -> dict[str, float]:
        """The seen perturbation tokens standing in for the unseen ``gene`` (empty: none)."""
        cov = self.registry[self.registry.perturbation_key]
        return prior_weights(
            gene,
            tokens=cov.tokens,
            control=self.registry.control,
            genes=self.preprocess.genes,
            vectors=self.gene_vectors,
            fit=self.prior_fit,
        )

    def soft_prior(self, obs: pd.DataFrame, *, use: bool) -> dict | None:
        """:func:`rnadiff.conditioning._prior.soft_prior` of ``obs`` with this engine's
        genes and expression prior."""
        return soft_prior(
            self.registry, obs, genes=self.preprocess.genes, weights_of=self.prior_weights,
            has_prior=self.gene_vectors is not None, use=use,
        )  # fmt: skip

    def used_prior(self, soft: dict | None) -> dict[str, dict[str, float]]:
        return dict((soft or {}).get(self.registry.perturbation_key, {}))

    # ---------------------------------------------------------------- transfer
    def transfer_plan(
        self, obs: pd.DataFrame, transfer: str, scale: float | None = None
    ) -> TransferPlan:
        """The cells ``transfer`` applies to (combinations of perturbation and context never
        measured) and its scale (``None``: the mode's default; for ``"compose"``, a scale that
        follows the distance to the source context, see :class:`TransferPlan`)."""
        mask = self.transfer_mask(obs, transfer)
        by_distance = transfer == "compose" and scale is None
        return TransferPlan(mask, transfer, transfer_scale(transfer, scale), by_distance)

    def never_measured(self, obs: pd.DataFrame, *, combinations: bool = False) -> np.ndarray:
        """:func:`rnadiff.conditioning._conditions.never_measured` of ``obs`` for this
        engine's training conditions, tokens and features."""
        featured = self.features.knows if self.features is not None else lambda name: False
        trained = set(self.trained_tokens)
        args = (self.registry, self.seen, obs, trained, featured)
        return conditions.never_measured(*args, combinations=combinations)

    def transfer_mask(self, obs: pd.DataFrame, transfer: str) -> np.ndarray:
        """Cells ``transfer`` applies to: a perturbation never measured in the cell's context
        but measured in some other (:meth:`never_measured`: none to transfer from)."""
        mask = conditions.transfer_mask(self.registry, self.seen, obs, transfer)
        return mask & ~self.never_measured(obs) if mask.any() else mask

    def interaction_cells(self, obs: pd.DataFrame, mask: np.ndarray) -> np.ndarray:
        """Cells of ``mask`` (transferred) whose perturbation is a combination every part of
        which was measured in the cell's own context
        (:func:`rnadiff.conditioning._conditions.parts_measured_here`): ``"compose"`` takes
        only their interaction from the measured context
        (:func:`rnadiff.sampling.interaction_transfer`)."""
        if not mask.any():
            return np.zeros(len(mask), dtype=bool)
        return mask & conditions.parts_measured_here(self.registry, self.seen, obs)

    def control_row(self) -> torch.Tensor:
        frame = pd.DataFrame({self.registry.perturbation_key: [self.registry.control]})
        encoded = self.registry.encode(frame, allow_missing=True)
        return torch.from_numpy(encoded[self.registry.perturbation_key])

    def context_plan(
        self, mask: np.ndarray, rows: list[tuple]
    ) -> tuple[list[tuple], np.ndarray, np.ndarray] | None:
        """Where ``"compose"`` takes each transferred cell's effect from:
        :func:`rnadiff.sampling._transfer_plan.context_plan`."""
        return _transfer_plan.context_plan(self, mask, rows)

    def transfer_contexts(
        self, mask: np.ndarray, rows: list[tuple]
    ) -> tuple[dict[str, torch.Tensor] | None, np.ndarray | None, np.ndarray]:
        """:meth:`context_plan` with the contexts encoded as condition rows of the other
        covariates; (None, None, NaNs) without any."""
        found = self.context_plan(mask, rows)
        if found is None:
            return None, None, np.full(len(rows), np.nan)
        contexts, weights, relative = found
        pkey = self.registry.perturbation_key
        others = [c.key for c in self.registry.covariates if c.categorical and c.key != pkey]
        encoded = self.registry.encode(pd.DataFrame(contexts, columns=others), allow_missing=True)
        return {k: torch.from_numpy(encoded[k]) for k in others}, weights, relative

    # ------------------------------------------------------------ interpolation
    def interpolation(self, obs: pd.DataFrame | None) -> dict[str, tuple[np.ndarray, ...]]:
        """:func:`rnadiff.sampling._interpolation.interpolation_plan` of ``obs``."""
        if obs is None:
            return {}
        return interpolation_plan(self.registry, self.measured, self.measured_within, obs)

    def outside_range(self, obs: pd.DataFrame | None) -> dict[str, tuple[int, float, float]]:
        """:func:`rnadiff.sampling._interpolation.outside_range` of ``obs``."""
        if obs is None:
            return {}
        return outside_range(self.registry, self.measured, self.measured_within, obs)

    def core(self, interpolation: dict, b: slice):
        """The EMA denoiser, interpolated between measured continuous values where asked."""
        core = self.network
        for key, (low, high, weight, where) in interpolation.items():
            if where[b].any():
                core = interpolated_covariate(
                    core,
                    key=key,
                    low=torch.from_numpy(low[b]),
                    high=torch.from_numpy(high[b]),
                    weight=torch.from_numpy(weight[b]),
                    where=torch.from_numpy(where[b]),
                )
        return core

    # --------------------------------------------------------- effect scales
    def cell_effect_scales(self, obs: pd.DataFrame | None) -> np.ndarray | None:
        """Each cell's calibrated effect scale, or None when no cell has one; 1 for a cell
        transferred to where its perturbation was never measured (even a pair of parts measured
        there: worse on simulated screens, benchmarks/results/studies/combo_elsewhere)."""
        pkey = self.registry.perturbation_key
        if not self.effect_scales or obs is None or pkey not in obs:
            return None
        out, prior = cell_effect_scales(
            self.registry[pkey], self.effect_scales, obs[pkey], self.prior_weights
        )
        out[self.transfer_mask(obs, "compose") & ~prior] = 1.0
        return out if (out != 1).any() else None

    def effect_scales_used(self, obs: pd.DataFrame, calibrated: bool) -> dict[str, float]:
        """``{perturbation: scale}`` of the calibrated cells, for the output's record."""
        scales = self.cell_effect_scales(obs) if calibrated else None
        if scales is None:
            return {}
        values = obs[self.registry.perturbation_key].astype(str).to_numpy()
        return {str(v): float(s) for v, s in zip(values, scales, strict=True) if s != 1}

    # -------------------------------------------------------------- denoisers
    def batch_denoisers(
        self,
        obs: pd.DataFrame | None,
        plan: TransferPlan,
        guidance: Guidance = 1.0,
        *,
        calibrated: bool = True,
    ) -> Callable[[slice], Callable]:
        """``b -> denoiser`` for the cells in slice ``b`` of ``obs``: the EMA network,
        interpolated between measured continuous values, with classifier-free ``guidance``,
        the calibrated effect scale of each cell's perturbation (``calibrated``) and the
        transfer of ``plan`` (``"compose"`` takes the effect from the nearest measured
        context)."""
        mask, mode, scale_ = plan.mask, plan.mode, plan.scale
        effect = self.cell_effect_scales(obs) if calibrated else None
        composing = mode == "compose" and mask.any()
        # combinations measured nowhere: composed from their parts (not with transfer="none")
        parts = (
            self.never_measured(obs, combinations=True)
            if mode != "none" and obs is not None
            else None
        )
        contexts, context_w, relative = (
            self.transfer_contexts(mask, conditions.condition_rows(self.registry, obs))
            if composing and obs is not None
            else (None, None, None)
        )
        compose_scale = (
            torch.from_numpy(plan.cell_scales(relative)).float()
            if composing and plan.by_distance and relative is not None
            else scale_
        )
        # combinations whose parts were measured in the cell's context: parts there, only the
        # interaction from the measured context (not the whole effect)
        interaction = (
            self.interaction_cells(obs, mask)
            if composing and context_w is not None
            else np.zeros(len(mask), dtype=bool)
        )
        interpolation = self.interpolation(obs)
        control = self.control_row() if composing or effect is not None else None
        pkey = self.registry.perturbation_key

        def for_batch(b: slice):
            denoiser = self.core(interpolation, b)
            if parts is not None and parts[b].any():
                where = torch.from_numpy(parts[b])
                denoiser = combination_composition(
                    denoiser, key=pkey, reference=self.control_row(), where=where
                )
            denoiser = classifier_free_guidance(denoiser, guidance)
            if effect is not None and (effect[b] != 1).any():
                denoiser = effect_scaling(
                    denoiser, key=pkey, reference=control, scale=torch.from_numpy(effect[b])
                )
            where = torch.from_numpy(mask[b])
            if mode == "guide" and where.any():
                weights = torch.where(where, torch.tensor(float(scale_)), torch.tensor(1.0))
                return classifier_free_guidance(denoiser, {pkey: weights})
            if mode == "compose" and where.any():
                return composed_transfer(
                    denoiser,
                    key=pkey,
                    reference=control,
                    scale=compose_scale[b] if torch.is_tensor(compose_scale) else compose_scale,
                    where=where,
                    interaction=torch.from_numpy(interaction[b]),
                    contexts=contexts,
                    context_weights=None if context_w is None else torch.from_numpy(context_w[b]),
                )
            return denoiser

        return for_batch

    # ------------------------------------------------------------------- runs
    def run(
        self,
        sampler,
        x: torch.Tensor,
        sigmas: torch.Tensor,
        cond: dict[str, torch.Tensor],
        *,
        plan: TransferPlan,
        guidance: Guidance = 1.0,
        generator: torch.Generator | None = None,
        batch_size: int = 2048,
        progress: bool = False,
        wrap: Callable | None = None,
        obs: pd.DataFrame | None = None,
        calibrated: bool = True,
    ) -> np.ndarray:
        """Sample in batches; ``sampler`` is a name of ``SAMPLERS`` or a sampler function, and
        ``wrap`` an optional outermost denoiser wrapper (e.g. gradient guidance). ``obs``: the
        cells' covariates, from which ``"compose"`` finds the measured contexts and unmeasured
        continuous values are interpolated. Returns model-space cells."""
        fn = SAMPLERS[sampler] if isinstance(sampler, str) else sampler
        for_batch = self.batch_denoisers(obs, plan, guidance, calibrated=calibrated)
        out = []
        batches = self.batches(x.shape[0], batch_size)
        for b in batches:
            c = {k: v[b] for k, v in cond.items()}
            step_denoiser = for_batch(b)
            if wrap is not None:
                step_denoiser = wrap(step_denoiser)
            out.append(
                fn(
                    step_denoiser,
                    x[b],
                    sigmas,
                    cond=c,
                    generator=generator,
                    progress=progress and len(batches) == 1,
                )
            )
        return torch.cat(out).numpy()

    def encode(
        self,
        z0: torch.Tensor,
        sigmas: torch.Tensor,
        cond: dict[str, torch.Tensor],
        *,
        batch_size: int = 2048,
        progress: bool = False,
        obs: pd.DataFrame | None = None,
    ) -> torch.Tensor:
        """The cells ``z0`` encoded to noise level ``sigmas[0]`` (probability-flow ODE).

        The last encoding is kept: predicting the same source cells under many targets (e.g.
        every knock-out from one set of control cells) encodes them once. It is reused only
        for the same cells, noise levels, conditions, interpolation, batch size and weights
        (and only up to 2**26 values, 256 MB).
        """
        interpolation = self.interpolation(obs)
        digest = hashlib.blake2b(digest_size=20)
        for t in [z0, sigmas, *cond.values(), *self.denoiser.state_dict().values()]:
            digest.update(str((t.dtype, tuple(t.shape))).encode())
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
        digest.update(repr((sorted(cond), batch_size)).encode())
        for key, arrays in sorted(interpolation.items()):
            digest.update(key.encode())
            for a in arrays:
                digest.update(np.ascontiguousarray(a).tobytes())
        key = digest.digest()
        if self._last_encoding is not None and self._last_encoding[0] == key:
            return self._last_encoding[1].clone()
        out = []
        for b in self.batches(z0.shape[0], batch_size):
            c = {k: v[b] for k, v in cond.items()}
            out.append(
                encode(self.core(interpolation, b), z0[b], sigmas, cond=c, progress=progress)
            )
        x = torch.cat(out) if out else z0.new_zeros((0, z0.shape[1]))
        # kept up to 256 MB; a larger source is encoded again each time
        self._last_encoding = (key, x.clone()) if x.numel() <= KEEP_ENCODING_MAX else None
        return x

    def sample(
        self,
        frame: pd.DataFrame,
        n_cells: int,
        *,
        sampler,
        steps: int,
        guidance: Guidance,
        transfer: str,
        transfer_scale: float | None,
        seed: int,
        batch_size: int,
        progress: bool,
        soft: dict | None = None,
        wrap: Callable | None = None,
        calibrated: bool = True,
        sigma_min: float | None = None,
    ) -> tuple[np.ndarray, pd.DataFrame, TransferPlan]:
        """``n_cells`` per row of ``frame`` from seeded noise: (model-space cells, obs, the
        transfer plan). Generation and design share it, so the same seed starts both from
        the same noise. ``sigma_min``: stop there and take the denoiser's estimate."""
        obs = frame.loc[frame.index.repeat(n_cells)].reset_index(names="rnadiff_condition")
        cond = self.cond(obs, allow_missing=True, soft=soft)
        gen = torch.Generator().manual_seed(seed)
        sigmas = self.sigmas(steps, sigma_min=sigma_min)
        x = torch.randn(len(obs), self.n_genes, generator=gen) * float(sigmas[0])
        plan = self.transfer_plan(obs, transfer, transfer_scale)
        z = self.run(
            sampler,
            x,
            sigmas,
            cond,
            plan=plan,
            guidance=guidance,
            generator=gen,
            batch_size=batch_size,
            progress=progress,
            wrap=wrap,
            obs=obs,
            calibrated=calibrated,
        )
        return z, obs, plan

    @torch.no_grad()
    def denoise(
        self,
        z: np.ndarray,
        sigmas: np.ndarray,
        obs: pd.DataFrame,
        *,
        batch_size: int = 2048,
        progress: Callable | None = None,
    ) -> np.ndarray:
        """Each cell's posterior mean ``D(z, sigma, cond)`` at its own noise level (model
        space in and out); ``progress`` wraps the batches (e.g. a progress bar)."""
        cond = self.cond(obs, allow_missing=True)
        interpolation = self.interpolation(obs)
        x, s_all = torch.from_numpy(z), torch.from_numpy(sigmas.astype(np.float32))
        batches = self.batches(x.shape[0], batch_size)
        out = []
        for b in progress(batches) if progress is not None else batches:
            c = {k: v[b] for k, v in cond.items()}
            out.append(self.core(interpolation, b)(x[b], s_all[b], c))
        return torch.cat(out).numpy() if out else np.zeros((0, self.n_genes), np.float32)
