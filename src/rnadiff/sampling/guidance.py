"""Guidance as denoiser wrappers: each function returns a new denoiser; samplers stay unaware."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from rnadiff.conditioning.nulls import drop_covariates

Denoiser = Callable[[torch.Tensor, torch.Tensor, dict | None], torch.Tensor]


def classifier_free_guidance(denoiser: Denoiser, scale: float | Mapping[str, float]) -> Denoiser:
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6) in denoised-estimate form.

    Parameters
    ----------
    denoiser
        A conditional denoiser trained with covariate dropout.
    scale
        A float applies one joint scale to the whole condition:
        ``D = D(null) + w * (D(c) - D(null))``; 1 is the conditional and 0 the unconditional
        denoiser. A mapping ``{covariate: w}`` guides each named covariate on its own:
        ``D = D(c) + sum_k (w_k - 1) * (D(c) - D(c without k))``; ``w_k = 1`` leaves covariate ``k``
        as it is, ``0`` drops it, ``> 1`` strengthens it.

    Returns
    -------
    callable
        ``guided(x, sigma, cond) -> x0_hat``.
    """
    if isinstance(scale, Mapping):
        weights = {k: float(w) for k, w in scale.items() if float(w) != 1.0}

        def guided(x, sigma, cond):
            out = denoiser(x, sigma, cond)
            if not weights:
                return out
            result = out
            for key, w in weights.items():
                result = result + (w - 1) * (out - denoiser(x, sigma, drop_covariates(cond, [key])))
            return result

        return guided

    w = float(scale)

    def guided_joint(x, sigma, cond):
        if w == 1.0:
            return denoiser(x, sigma, cond)
        uncond = denoiser(x, sigma, drop_covariates(cond, list(cond or {})))
        if w == 0.0:
            return uncond
        return uncond + w * (denoiser(x, sigma, cond) - uncond)

    return guided_joint
