"""Samplers of the probability-flow ODE / reverse SDE, as pure functions with one signature.

Every sampler is ``sample_x(denoiser, x, sigmas, *, cond=None, generator=None, callback=None,
progress=False) -> x``: ``denoiser(x, sigma, cond) -> x0_hat`` is any denoiser (guided or not),
``x`` starts at noise level ``sigmas[0]`` and the result is at ``sigmas[-1]``. Inputs are never
modified in place. Decreasing ``sigmas`` ending in 0 generate data; increasing ``sigmas`` (with the
deterministic samplers) integrate the ODE the other way and encode data into noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

Denoiser = Callable[[torch.Tensor, torch.Tensor, dict | None], torch.Tensor]
Callback = Callable[[dict], None]


def _denoise(denoiser: Denoiser, x: torch.Tensor, sigma: float, cond) -> torch.Tensor:
    return denoiser(x, x.new_full((x.shape[0],), sigma), cond)


def _steps(sigmas: torch.Tensor, progress: bool, desc: str):
    return tqdm(range(len(sigmas) - 1), disable=not progress, desc=desc, leave=False)


@torch.no_grad()
def sample_euler(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    cond: dict | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """First-order Euler steps of the probability-flow ODE (Karras et al. 2022, eq. 4)."""
    for i in _steps(sigmas, progress, "euler"):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = _denoise(denoiser, x, s, cond)
        x = x + (s_next - s) * (x - denoised) / s
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "denoised": denoised})
    return x


@torch.no_grad()
def sample_heun(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    cond: dict | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """Heun's 2nd-order method with optional stochastic churn (Karras et al. 2022, Algorithm 2).

    ``s_churn > 0`` adds fresh noise before each step with ``s_tmin <= sigma <= s_tmax``, which
    corrects errors of earlier steps; ``s_churn = 0`` is the deterministic ODE solver.
    """
    n = len(sigmas) - 1
    for i in _steps(sigmas, progress, "heun"):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= s <= s_tmax else 0.0
        if gamma > 0:
            s_hat = s * (1 + gamma)
            eps = torch.randn(x.shape, generator=generator, dtype=x.dtype) * s_noise
            x = x + eps * math.sqrt(s_hat**2 - s**2)
            s = s_hat
        denoised = _denoise(denoiser, x, s, cond)
        d = (x - denoised) / s
        x_next = x + (s_next - s) * d
        if s_next > 0:
            d_next = (x_next - _denoise(denoiser, x_next, s_next, cond)) / s_next
            x_next = x + (s_next - s) * (d + d_next) / 2
        x = x_next
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "denoised": denoised})
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    cond: dict | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    corrector: Callable[[torch.Tensor, float], torch.Tensor] | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M), a 2nd-order multistep solver: one denoiser call per step.

    Lu et al. 2022 ("DPM-Solver++"), Algorithm 2, in the sigma parametrisation with
    ``t = -log(sigma)``. ``corrector(x, sigma) -> x``, if given, runs after every step that
    ends above noise level 0 (see :func:`sample_langevin`).
    """
    old_denoised, h_last = None, None
    for i in _steps(sigmas, progress, "dpmpp_2m" if corrector is None else "predictor-corrector"):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = _denoise(denoiser, x, s, cond)
        if s_next == 0:
            x = denoised
        else:
            h = math.log(s) - math.log(s_next)
            d = denoised
            if old_denoised is not None:
                r = h_last / h
                d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (s_next / s) * x - math.expm1(-h) * d
            h_last = h
            if corrector is not None:
                x = corrector(x, s_next)
        old_denoised = denoised
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "denoised": denoised})
    return x


def langevin_corrector(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigma: float,
    *,
    cond: dict | None = None,
    generator: torch.Generator | None = None,
    n_steps: int = 1,
    snr: float = 0.1,
) -> torch.Tensor:
    """Langevin MCMC steps at a fixed noise level (the corrector of Song et al. 2021, Alg. 5).

    The score is ``(D(x, sigma) - x) / sigma^2``; the step size is set so the signal-to-noise
    ratio of each update is ``snr``. The steps pull samples toward the (guided) distribution
    at this noise level, correcting the errors a predictor step and guidance make.
    """
    for _ in range(n_steps):
        score = (_denoise(denoiser, x, sigma, cond) - x) / sigma**2
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        # one step size for the batch (norms averaged over cells, as in Song et al.'s code):
        # a per-cell step explodes for cells that happen to sit where the score is small
        score_norm = score.norm(dim=1).mean().clamp_min(1e-12)
        eps = 2 * (snr * z.norm(dim=1).mean() / score_norm) ** 2
        x = x + eps * score + torch.sqrt(2 * eps) * z
    return x


@torch.no_grad()
def sample_langevin(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    cond: dict | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    n_corrector: int = 1,
    snr: float = 0.1,
) -> torch.Tensor:
    """Predictor-corrector: a DPM-Solver++(2M) step, then ``n_corrector`` Langevin steps at
    the new noise level (none at the last, noise-free level)."""

    def corrector(x: torch.Tensor, sigma: float) -> torch.Tensor:
        return langevin_corrector(
            denoiser, x, sigma, cond=cond, generator=generator, n_steps=n_corrector, snr=snr
        )

    return sample_dpmpp_2m(
        denoiser,
        x,
        sigmas,
        cond=cond,
        generator=generator,
        callback=callback,
        progress=progress,
        corrector=corrector if n_corrector > 0 else None,
    )


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "euler": sample_euler,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
}  # deterministic ODE solvers; the stochastic ``sample_langevin`` is chosen by ``design``
