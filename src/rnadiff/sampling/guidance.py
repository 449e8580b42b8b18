"""Guidance as denoiser wrappers: each function returns a new denoiser; samplers stay unaware."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from rnadiff.conditioning.nulls import drop_covariates

Denoiser = Callable[[torch.Tensor, torch.Tensor, dict | None], torch.Tensor]


def classifier_free_guidance(
    denoiser: Denoiser, scale: float | Mapping[str, float | torch.Tensor]
) -> Denoiser:
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
        as it is, ``0`` drops it, ``> 1`` strengthens it. A weight may also be a tensor
        ``(n_cells,)``, one scale per cell.

    Returns
    -------
    callable
        ``guided(x, sigma, cond) -> x0_hat``.
    """
    if isinstance(scale, Mapping):
        weights = {
            k: w if torch.is_tensor(w) else float(w)
            for k, w in scale.items()
            if torch.is_tensor(w) or float(w) != 1.0
        }

        def guided(x, sigma, cond):
            out = denoiser(x, sigma, cond)
            result = out
            for key, w in weights.items():
                if torch.is_tensor(w):
                    if bool((w == 1).all()):
                        continue
                    w = w.to(out.dtype)[:, None]
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


def compositional_guidance(
    denoiser: Denoiser,
    *,
    key: str,
    reference: torch.Tensor,
    scale: float = 1.0,
    where: torch.Tensor | None = None,
) -> Denoiser:
    """Transfer the effect of covariate ``key`` from its marginal over the other covariates.

    ``D = D(c[key <- ref]) + scale * (D(c[others <- null]) - D(c[key <- ref, others <- null]))``:
    the reference (e.g. control) in the cell's full context, plus the perturbation's effect as
    the model knows it across all contexts. This is the composition of conditionals of
    composable diffusion (Liu et al. 2022, eq. 10) applied to the perturbation effect; it is
    exact when the effect is additive in the denoised estimate, and it reaches contexts where
    the perturbation was never measured, where the joint conditional ``D(c)`` tends to shrink
    the effect toward what was seen in that context.

    Parameters
    ----------
    denoiser
        A conditional denoiser trained with covariate dropout.
    key
        The covariate whose effect is transferred (the perturbation).
    reference
        Condition tensor of ``key`` for the reference value (one row, or one row per cell).
    scale
        Multiplier of the transferred effect.
    where
        Boolean ``(n_cells,)``: use the composition only for these cells, the joint
        conditional for the others (e.g. only for combinations unseen in training).

    Returns
    -------
    callable
        ``guided(x, sigma, cond) -> x0_hat``; the condition's rows must match ``where``.
    """

    def guided(x, sigma, cond):
        others = [k for k in cond if k != key]
        ref = reference.expand_as(cond[key]) if reference.shape != cond[key].shape else reference
        cond_ref = {**cond, key: ref}
        base = denoiser(x, sigma, cond_ref)
        effect = denoiser(x, sigma, drop_covariates(cond, others)) - denoiser(
            x, sigma, drop_covariates(cond_ref, others)
        )
        composed = base + scale * effect
        if where is None:
            return composed
        return torch.where(where[:, None], composed, denoiser(x, sigma, cond))

    return guided
