"""Parameter descriptions shared by several methods of :class:`rnadiff.RNADiffusion`.

A docstring line that holds only ``{name}`` is replaced by the paragraph ``name`` below,
indented like the placeholder, so every method documents every argument without copies.
"""

from __future__ import annotations

import re

SHARED = {
    "sampler": """\
sampler
    ``"dpmpp_2m"`` (DPM-Solver++(2M), one network call per step), ``"heun"`` or
    ``"euler"``. On Kang 2018 (held-out CD14+ monocytes) DPM-Solver++ with 20 steps scored as
    Heun with 32 steps (63 calls) at a third of the time.
steps
    Noise levels of the sampler.""",
    "guidance": """\
guidance
    Classifier-free guidance: a joint scale (1: conditional) or ``{covariate: scale}``.""",
    "transfer": """\
transfer
    How a perturbation reaches a context (cell type, batch, ...) where it was never
    measured; cells whose combination of categorical covariates occurred in training always
    use the joint conditional, which shrinks unseen effects toward what that context showed
    in training. ``"compose"`` (default): the control in that context plus the
    perturbation's effect in the nearest context where it was measured (by the model's
    control profile of each context; its marginal over contexts when there is none), times
    ``transfer_scale`` (default 1.5; :func:`rnadiff.sampling.compositional_guidance`).
    ``"guide"``: classifier-free guidance on the perturbation with scale ``transfer_scale``
    (default 3). ``"none"``: the joint conditional.
transfer_scale
    Strength of the transfer; ``None``: the default of the chosen ``transfer``.""",
    "prior": """\
prior
    Allow perturbations never seen in training whose target is one of the model's genes:
    each is represented by a mix of the seen perturbations of the genes whose expression
    co-varies most with it, blended with all seen perturbations by their cells as far as the
    trust in co-expression fitted on the seen ones says (``model.prior``;
    :mod:`rnadiff.conditioning`), with the same mix of their calibrated effect scales; the
    mix is logged and stored in ``uns['rnadiff']['perturbation_prior']``.""",
    "calibrated": """\
calibrated
    Scale the effect of each perturbation measured in the cell's context by the factor
    :meth:`calibrate_effects` found on the training cells (``effect_scales``; training runs
    it); ``False``: the network's own effect. The factors used are in
    ``uns['rnadiff']['effect_scales']``.""",
    "run": """\
seed
    Seed of the noise; the same seed gives the same cells.
batch_size
    Cells per denoiser call.
progress
    Show a progress bar.""",
}


def shared_docs(fn):
    """Replace ``{name}`` lines of ``fn``'s docstring by the shared descriptions."""

    def fill(match: re.Match) -> str:
        indent, key = match.group(1), match.group(2)
        return "\n".join(indent + line if line else line for line in SHARED[key].splitlines())

    fn.__doc__ = re.sub(r"^( *)\{(\w+)\}$", fill, fn.__doc__, flags=re.M)
    return fn
