"""Guidance as denoiser wrappers: each function returns a new denoiser; samplers stay unaware."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from rnadiff.conditioning._nulls import drop_covariates

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
    scale: float | torch.Tensor = 1.0,
    where: torch.Tensor | None = None,
    contexts: Mapping[str, torch.Tensor] | None = None,
    context_weights: torch.Tensor | None = None,
) -> Denoiser:
    """Transfer the effect of covariate ``key`` from other contexts to the cell's context.

    ``D = D(c[key <- ref]) + scale * effect``: the reference (e.g. control) in the cell's full
    context plus the perturbation's effect as the model knows it elsewhere. This is the
    composition of conditionals of composable diffusion (Liu et al. 2022, eq. 10) applied to
    the perturbation effect; it is exact when the effect is additive in the denoised estimate,
    and it reaches contexts where the perturbation was never measured, where the joint
    conditional ``D(c)`` tends to shrink the effect toward what was seen in that context.

    The effect is either

    * averaged over measured contexts (``contexts`` given): ``sum_j w_ij (D(c[others <- ctx_j])
      - D(c[key <- ref, others <- ctx_j]))`` with the cell's weights ``w_i`` over the
      contexts ``ctx_j`` in which its perturbation and the reference were both measured (the
      score-space analogue of the additive baseline); or
    * marginal over the other covariates: ``D(c[others <- null]) - D(c[key <- ref, others <-
      null])``, for cells without any weight or without ``contexts``. The marginal mixes the
      effect with differences in composition: when the perturbed training cells lack the
      target's context (e.g. a cell type), the marginal difference also moves cells away from
      that context.

    Parameters
    ----------
    denoiser
        A conditional denoiser trained with covariate dropout.
    key
        The covariate whose effect is transferred (the perturbation).
    reference
        Condition tensor of ``key`` for the reference value (one row, or one row per cell).
    scale
        Multiplier of the transferred effect: one number, or one per cell ``(n_cells,)``.
    where
        Boolean ``(n_cells,)``: use the composition only for these cells, the joint
        conditional for the others (e.g. only for combinations unseen in training).
    contexts
        Condition rows of the other covariates, one row per context: ``{covariate: tensor
        (n_contexts, ...)}``; covariates not named keep the cell's own value.
    context_weights
        ``(n_cells, n_contexts)``, each row summing to 1 (or all zero: the marginal effect).

    Returns
    -------
    callable
        ``guided(x, sigma, cond) -> x0_hat``; the condition's rows must match ``where``.
    """
    if (contexts is None) != (context_weights is None):
        raise ValueError("give both contexts and context_weights, or neither")

    def guided(x, sigma, cond):
        others = [k for k in cond if k != key]
        cond_ref = _with_value(cond, key, reference)
        base = denoiser(x, sigma, cond_ref)
        weights = context_weights.to(base.dtype) if context_weights is not None else None
        has = weights.sum(dim=1) > 0 if weights is not None else torch.zeros(len(x), dtype=bool)
        effect = torch.zeros_like(base)
        if not bool(has.all()):
            effect = denoiser(x, sigma, drop_covariates(cond, others)) - denoiser(
                x, sigma, drop_covariates(cond_ref, others)
            )
        if bool(has.any()):
            averaged = torch.zeros_like(base)
            for j in torch.nonzero(weights.sum(dim=0) > 0).flatten().tolist():
                diff = denoiser(x, sigma, _in_context(cond, contexts, j)) - denoiser(
                    x, sigma, _in_context(cond_ref, contexts, j)
                )
                averaged = averaged + weights[:, j : j + 1] * diff
            effect = torch.where(has[:, None], averaged, effect)
        s = scale.to(base.dtype)[:, None] if torch.is_tensor(scale) else scale
        composed = base + s * effect
        if where is None:
            return composed
        return torch.where(where[:, None], composed, denoiser(x, sigma, cond))

    return guided


def effect_scaling(
    denoiser: Denoiser,
    *,
    key: str,
    reference: torch.Tensor,
    scale: torch.Tensor,
) -> Denoiser:
    """Scale the effect of covariate ``key`` relative to a reference value, cell by cell.

    ``D = D(c[key <- ref]) + s * (D(c) - D(c[key <- ref]))``: with the control as reference,
    the perturbation's effect in the cell's own context times ``s``. ``s = 1`` is the plain
    conditional denoiser (a batch without any other factor costs no second call).
    Used with the effect scales the model calibrates on its training cells
    (:meth:`rnadiff.RNADiffusion.calibrate_effects`).

    Parameters
    ----------
    denoiser
        A conditional denoiser.
    key
        The covariate whose effect is scaled (the perturbation).
    reference
        Condition tensor of ``key`` for the reference value (one row, or one row per cell).
    scale
        ``(n_cells,)``: the factor of each cell's effect.

    Returns
    -------
    callable
        ``scaled(x, sigma, cond) -> x0_hat``; the condition's rows must match ``scale``.
    """

    def scaled(x, sigma, cond):
        out = denoiser(x, sigma, cond)
        where = scale != 1
        if not bool(where.any()):
            return out
        base = denoiser(x, sigma, _with_value(cond, key, reference))  # whole batch: row-wise
        s = scale.to(out.dtype)[:, None]
        return torch.where(where[:, None], base + s * (out - base), out)

    return scaled


def _with_value(cond: Mapping[str, torch.Tensor], key: str, value: torch.Tensor) -> dict:
    """``cond`` with covariate ``key`` set to ``value`` (one row, or one row per cell)."""
    return {**cond, key: value.expand_as(cond[key])}


def _n_rows(cond: Mapping[str, torch.Tensor]) -> int:
    return next(iter(cond.values())).shape[0]


def _on_cells(guided: Denoiser, denoiser: Denoiser, where: torch.Tensor | None) -> Denoiser:
    """``guided`` for the cells of ``where`` (every cell when None), ``denoiser`` (the joint
    conditional) for the others; neither is evaluated when it serves no cell."""
    if where is None:
        return guided

    def masked(x, sigma, cond):
        if not bool(where.any()):
            return denoiser(x, sigma, cond)
        out = guided(x, sigma, cond)
        if bool(where.all()):
            return out
        return torch.where(where[:, None], out, denoiser(x, sigma, cond))

    return masked


def _in_context(cond: Mapping[str, torch.Tensor], contexts: Mapping[str, torch.Tensor], j: int):
    """``cond`` with the covariates of ``contexts`` set to context ``j`` for every row."""
    n = _n_rows(cond)
    return {
        k: (contexts[k][j : j + 1].expand(n, *contexts[k].shape[1:]) if k in contexts else v)
        for k, v in cond.items()
    }


def interpolated_covariate(
    denoiser: Denoiser,
    *,
    key: str,
    low: torch.Tensor,
    high: torch.Tensor,
    weight: torch.Tensor,
    where: torch.Tensor,
) -> Denoiser:
    """Interpolate the denoiser linearly between two values of a continuous covariate.

    ``D = (1 - w) * D(c[key <- low]) + w * D(c[key <- high])`` for the cells in ``where``, the
    plain ``D(c)`` for the others. With a covariate measured at a few values only (time
    points, doses), a network's embedding between them is unconstrained by data; this asks the
    model for the measured neighbours instead, the score-space analogue of interpolating the
    neighbouring populations.

    Parameters
    ----------
    denoiser
        A conditional denoiser.
    key
        The continuous covariate (its condition is a vector ``(n_cells,)``).
    low, high, weight
        ``(n_cells,)``: encoded neighbouring values and the weight of ``high`` for each cell.
    where
        Boolean ``(n_cells,)``: the cells to interpolate.

    Returns
    -------
    callable
        ``guided(x, sigma, cond) -> x0_hat``.
    """

    def guided(x, sigma, cond):
        value = cond[key]
        at_low = denoiser(x, sigma, {**cond, key: torch.where(where, low.to(value.dtype), value)})
        at_high = denoiser(x, sigma, {**cond, key: torch.where(where, high.to(value.dtype), value)})
        w = weight.to(at_low.dtype)[:, None]
        return (1 - w) * at_low + w * at_high

    return _on_cells(guided, denoiser, where)

    return guided


def gradient_guidance(
    denoiser: Denoiser,
    objective: Callable[[torch.Tensor], torch.Tensor],
    *,
    scale: float = 1.0,
    precondition: torch.Tensor | float = 1.0,
    through_denoiser: bool = False,
    sigma_min: float = 0.0,
    sigma_max: float = float("inf"),
) -> Denoiser:
    """Steer the denoised estimate up the gradient of a differentiable objective.

    ``D'(x, sigma) = D(x, sigma) + scale * P * grad f``, applied at noise levels
    ``sigma_min <= sigma <= sigma_max``; the sampler then follows the guided estimate, and the
    denoiser at the next (lower) noise level pulls the nudged sample back toward the data
    manifold, so genes that move with the targeted ones follow them. This is the
    estimate-space guidance of "universal guidance" (Bansal et al. 2023) and, with
    ``through_denoiser=True``, of diffusion posterior sampling (Chung et al. 2023), where the
    gradient is taken with respect to the noisy input through the network: the denoiser's
    Jacobian projects it onto directions the data vary in (small at high noise, the identity
    at low noise).

    Parameters
    ----------
    denoiser
        Any denoiser (conditional, classifier-free guided, ...).
    objective
        ``f(x0) -> (n_cells,)`` values to increase, differentiable in ``x0`` (the
        denoiser's space).
    scale
        Step size. With an objective equal to minus half the squared distance to a target
        set, and ``precondition`` mapping gradients to that distance's units, ``scale=1``
        moves the estimate onto the set.
    precondition
        Per-gene (or scalar) factor applied to the gradient, e.g. ``1 / std**2`` when ``f``
        is defined on ``x0 * std + mean``.
    through_denoiser
        Differentiate through the network with respect to the noisy sample.
    sigma_min, sigma_max
        Noise levels where guidance acts.

    Returns
    -------
    callable
        ``guided(x, sigma, cond) -> x0_hat``.
    """

    def guided(x, sigma, cond):
        s = float(sigma.reshape(-1)[0])
        if not sigma_min <= s <= sigma_max or scale == 0:
            return denoiser(x, sigma, cond)
        with torch.enable_grad():
            if through_denoiser:
                x_in = x.detach().requires_grad_(True)
                out = denoiser(x_in, sigma, cond)
                (grad,) = torch.autograd.grad(objective(out).sum(), x_in)
                out = out.detach()
            else:
                out = denoiser(x, sigma, cond).detach()
                x0 = out.clone().requires_grad_(True)
                (grad,) = torch.autograd.grad(objective(x0).sum(), x0)
        return out + scale * precondition * grad

    return guided


def combination_composition(
    denoiser: Denoiser,
    *,
    key: str,
    reference: torch.Tensor,
    where: torch.Tensor | None = None,
) -> Denoiser:
    """Compose a combination's effect from its parts (composable diffusion, Liu et al. 2022).

    ``D = D(c[key <- ref]) + sum_t (D(c[key <- t]) - D(c[key <- ref]))`` over the tokens ``t``
    of each cell's multi-hot condition ``c[key]``: the reference (control) in the cell's
    context plus each single perturbation's effect as the model knows it there. Exact when
    the parts' effects add in the denoised estimate; a single token gives ``D(c)``.

    Parameters
    ----------
    denoiser
        A conditional denoiser.
    key
        The perturbation covariate (a multi-hot condition ``(n_cells, n_tokens)``).
    reference
        Condition row of ``key`` for the reference (control).
    where
        Boolean ``(n_cells,)``: compose only these cells, the joint conditional for the others.

    Returns
    -------
    callable
        ``guided(x, sigma, cond) -> x0_hat``.
    """

    def guided(x, sigma, cond):
        value = cond[key]
        ref = reference.to(value.dtype).expand_as(value)
        active = value != 0
        order = torch.cumsum(active.to(torch.int64), dim=1) * active  # k-th token of a row
        base = denoiser(x, sigma, {**cond, key: ref})
        out = base
        for k in range(1, int(order.max()) + 1):
            has = (order == k).any(dim=1, keepdim=True)
            part = torch.where(has, torch.where(order == k, value, 0), ref)
            out = out + (denoiser(x, sigma, {**cond, key: part}) - base)
        return out

    return _on_cells(guided, denoiser, where)


def interaction_transfer(
    denoiser: Denoiser,
    *,
    key: str,
    reference: torch.Tensor,
    contexts: Mapping[str, torch.Tensor],
    context_weights: torch.Tensor,
    where: torch.Tensor | None = None,
) -> Denoiser:
    """A combination's parts as measured in the cell's context, plus its interaction as
    measured elsewhere.

    With ``P(c)`` the composition of the parts (:func:`combination_composition`: the reference
    plus each part's effect, all in the cell's context ``c``)::

        D = P(c) + sum_j w_ij (D(c[others <- ctx_j]) - P(c[others <- ctx_j]))

    The bracket is the interaction of the combination in measured context ``ctx_j``: what its
    joint conditional adds to the sum of its parts' effects there. For a combination measured
    in some contexts whose parts were each measured in the cell's own context, this keeps the
    parts' effects of the target context (where :func:`compositional_guidance` would carry the
    whole combination's effect over, parts included, from a context that may respond
    differently) and transfers only what the parts do not explain. A cell whose weights are
    all zero gets ``P(c)`` (no interaction).

    Parameters
    ----------
    denoiser
        A conditional denoiser.
    key
        The perturbation covariate (a multi-hot condition ``(n_cells, n_tokens)``).
    reference
        Condition row of ``key`` for the reference (control).
    contexts
        Condition rows of the other covariates, one per measured context: ``{covariate:
        tensor (n_contexts, ...)}``; covariates not named keep the cell's own value.
    context_weights
        ``(n_cells, n_contexts)``: each cell's weights over the contexts where its
        combination was measured (rows summing to 1, or all zero).
    where
        Boolean ``(n_cells,)``: only these cells; the joint conditional for the others.

    Returns
    -------
    callable
        ``guided(x, sigma, cond) -> x0_hat``.
    """
    parts = combination_composition(denoiser, key=key, reference=reference)

    def guided(x, sigma, cond):
        out = parts(x, sigma, cond)
        weights = context_weights.to(out.dtype)
        for j in torch.nonzero(weights.sum(dim=0) > 0).flatten().tolist():
            there = _in_context(cond, contexts, j)
            out = out + weights[:, j : j + 1] * (denoiser(x, sigma, there) - parts(x, sigma, there))
        return out

    return _on_cells(guided, denoiser, where)


def composed_transfer(
    denoiser: Denoiser,
    *,
    key: str,
    reference: torch.Tensor,
    scale: float | torch.Tensor,
    where: torch.Tensor,
    interaction: torch.Tensor,
    contexts: Mapping[str, torch.Tensor] | None,
    context_weights: torch.Tensor | None,
) -> Denoiser:
    """The ``"compose"`` transfer of the cells of ``where``: :func:`interaction_transfer` for
    those of ``interaction`` (combinations whose parts were measured in the cell's context;
    ``interaction`` must lie within ``where`` and needs ``contexts``),
    :func:`compositional_guidance` with ``scale`` for the others; the joint conditional for
    cells of neither. Arguments as those functions'."""
    composed = compositional_guidance(
        denoiser, key=key, reference=reference, scale=scale, where=where & ~interaction,
        contexts=contexts, context_weights=context_weights,
    )  # fmt: skip
    if not bool(interaction.any()):
        return composed
    transferred = interaction_transfer(
        denoiser, key=key, reference=reference, contexts=contexts,
        context_weights=context_weights, where=interaction,
    )  # fmt: skip
    if not bool((where & ~interaction).any()):
        return transferred

    def chosen(x, sigma, cond):  # both kinds in one batch
        return torch.where(
            interaction[:, None], transferred(x, sigma, cond), composed(x, sigma, cond)
        )

    return chosen
