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
    a scale (:func:`rnadiff.sampling.compositional_guidance`). By default the scale follows
    how far that source context is: ``s = 1 + 0.5 * min(1, r)``, with ``r`` its squared
    distance to the cell's context over the median distance of each measured context to
    its nearest other (:func:`rnadiff.conditioning.distance_transfer_scale`): 1 for a
    near-twin (e.g. CD8 for CD4 T cells), 1.5 for a source as far as measured contexts
    usually are. A combination measured elsewhere whose parts were each measured in the
    cell's context: its parts' effects there plus its interaction from the nearest context
    where it was measured (:func:`rnadiff.sampling.interaction_transfer`).
    ``uns['rnadiff']['transfer_sources']`` records each transferred condition's source,
    ``r``, scale and what was transferred. ``"guide"``: classifier-free guidance on the
    perturbation with scale ``transfer_scale`` (default 3). ``"none"``: the joint
    conditional.
transfer_scale
    Strength of the transfer, the same for every cell; ``None``: the default of the chosen
    ``transfer`` (``"compose"``: the scale that follows the distance, up to 1.5).""",
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
    "counts": """\
counts
    Raw counts out (models trained on raw counts): the sampler stops at the counting noise
    level of the cells' library sizes, each gene's expression is the one whose expected
    log-normalized value is the estimate there, and counts are Poisson draws at library
    sizes of the target condition (fitted on the training cells; ``predict`` keeps each
    source cell's depth rank): ``layers['counts']`` (integers, every gene),
    ``obs['total_counts']``, and ``X`` their log-normalized values
    (:mod:`rnadiff.model._counts` has the equations). Use it for differential expression
    of predicted against real cells (Wilcoxon tests, cell-eval): without counts a gene at
    zero in real cells gets small non-zero values in every predicted cell, which such tests
    call significant (cell-eval's DES with counts / without: Kang 0.60 / 0.45, Papalexi 0.19
    / 0.10); the means (R², Pearson delta) barely change, the E-distance rises (cells noisier
    by counting).""",
    "run": """\
seed
    Seed of the noise; the same seed gives the same cells.
batch_size
    Cells per denoiser call.
progress
    Show a progress bar.""",
}

# the parameters of each method of RNADiffusion (so the face file stays short)
METHOD_PARAMS = {
    "setup_anndata_params": """\
adata
    Cells x genes; raw counts or log-normalized values in ``X`` (or ``layer``).
perturbation_key
    Column of the perturbation (drug, CRISPR target, stimulus); combinations are
    written ``A+B`` (see ``combination_sep``).
control
    The value of ``perturbation_key`` that marks unperturbed cells.
cell_type_key, batch_key
    Columns of the cell type and the batch.
categorical_keys
    Other categorical covariates.
dose_key, time_key
    Continuous covariates: dose (``log1p``-transformed) and time.
continuous_keys
    Other continuous covariates.
combination_sep
    Separator of combination perturbations (only the perturbation column is split;
    ``None``: no combinations, e.g. when ``+`` belongs to the names).
smiles_key
    Column with each perturbation's SMILES (drugs; a combination's row may hold its
    parts' SMILES joined by ``"."``): drugs are then embedded from their structure
    (Morgan fingerprints, RDKit), so drugs never seen in training can be predicted.
smiles
    ``{drug: SMILES}``: structures of drugs, beside or instead of ``smiles_key``; it may
    name drugs absent from the data (candidates to predict or rank later).
layer, use_raw
    Read expression from ``layers[layer]`` or ``adata.raw`` instead of ``X``. By
    default ``X``, unless it holds log-normalized values and raw counts sit beside it
    (``layers['counts']`` or ``adata.raw``): those are read, and the log says so.""",
    "train_params": """\
max_steps, epochs, min_steps, max_epochs, batch_size, lr, seed, checkpoint_every
    Override the fields of ``config`` (see :class:`TrainConfig`). The length:
    ``max_steps`` alone trains exactly that many steps; with ``epochs`` or
    ``min_steps`` the run aims at ``epochs`` passes over the cells, between
    ``min_steps`` and ``max_steps`` (:meth:`TrainConfig.steps_for`); by default at least
    ``min_epochs`` (2) passes past the default ``max_steps`` (large data; a ``max_steps``
    given here is a hard cap); training stops after ``max_epochs`` passes (small data sets
    memorize their cells with many; ``max_epochs=0``: no cap). ``batch_size`` (the
    global minibatch under torchrun) follows the data by default
    (:meth:`TrainConfig.batch_for`: 128, or 512 on large data).
checkpoint_dir
    Save checkpoints here (four per run and every ``checkpoint_minutes``, and at the
    end); an interrupted run continues, exactly as it would have gone, with
    ``RNADiffusion.load(checkpoint_dir, adata=adata).train(checkpoint_dir=...)`` on
    the same data (other data are refused).
config
    Training configuration; default: the previous run's, else ``TrainConfig()``.
device
    Where to train: ``"auto"`` (a CUDA GPU when there is one), ``"cpu"`` or ``"cuda"``. The
    model stays there; sampling runs its network there too.
compile
    Compile the training step with ``torch.compile`` (worth it on a GPU; slow to start).
progress
    Show a progress bar.""",
    "calibrate_effects_params": """\
n_cells
    Training control cells to predict from (seeded choice).
steps
    Steps of the encoding and decoding (DPM-Solver++(2M)).
seed, batch_size, progress
    Seed of the choice of cells; cells per denoiser call; a progress bar.""",
    "calibrate_means_params": """\
n_cells
    Control cells of each context predicted under each of its conditions (seeded choice).
max_conditions
    Conditions anchored at most (those with the most training cells first; a time course:
    transports, each source's nearest first).
steps
    Steps of the encoding and decoding (DPM-Solver++(2M)).
seed, batch_size, progress
    Seed of the choice of cells and of the sampler; cells per call; a progress bar.""",
    "calibrate_spread_params": """\
n_cells
    Source cells predicted per pair (seeded choice).
max_pairs, min_cells
    Pairs used at most (those with the most target cells first); training cells each
    side of a pair needs.
steps
    Steps of the encoding and decoding (DPM-Solver++(2M)).
seed, batch_size, progress
    Seed of the choice of cells and of the sampler; cells per call; a progress bar.""",
    "predict_params": """\
source
    Cells to perturb (e.g. control cells of one cell type), with the registered
    covariate columns in ``obs`` and the model's genes; left unmodified.
perturbation
    Shorthand for ``target={perturbation_key: perturbation}``; a list of them, or
    ``"all"`` (every perturbation of the model but the control), predicts the source
    cells under each into one AnnData (cell names get ``-<perturbation>``;
    ``uns['rnadiff']['predictions']`` has each one's record), e.g. a whole screen.
target
    Covariates to change, e.g. ``{"condition": "stim"}``; others keep the source's.
method
    ``"counterfactual"``: encode each cell to noise with the probability-flow ODE
    under its own condition, decode under the target (the cell's identity is kept);
    ``"generate"``: sample new cells under each cell's target condition.
{sampler}
{guidance}
{transfer}
encode_sigma
    Counterfactual only: noise level the cells are encoded to (default
    ``sigma_max``, a full inversion); lower values keep more of the source cell.
{prior}
{calibrated}
anchor
    Counterfactual only: correct each predicted cell whose source is its context's
    control by the model's own error at the measured conditions its target is built
    from (:meth:`calibrate_means`, training runs it): the condition itself, the doses
    or times measured around it, or the parts of a combination (and, for a combination
    measured in another context, its interaction there). The predicted means then
    reproduce the training means of measured conditions; the cells corrected are
    counted in ``uns['rnadiff']['anchored_cells']``. With ``method="generate"`` the
    generated cells are moved as :meth:`generate` moves them (``anchor``).
{counts}
spread
    Counterfactual only: widen the predicted cells of each target condition around
    their own mean by ``spread_scale`` (:func:`rnadiff.conditioning.widen`: values
    stay non-negative, every gene keeps its mean). Predict a population in one call.
layer
    Layer of ``source`` holding its expression (default: the training data's, else
    ``X``).
{run}""",
    "denoise_params": """\
adata
    Cells with the model's genes, raw counts or log-normalized as the training data.
sigma
    Noise level, in units of each gene's training standard deviation. ``"auto"`` (raw
    counts only): each cell's counting noise beyond the training cells', from its
    total counts (:func:`rnadiff.diffusion.technical_sigma`).
layer
    Layer holding the expression (default: the training data's, else ``X``).
key_added
    With ``inplace``: the layer of ``adata`` the denoised values go to.
inplace
    Add the result to ``adata`` (``layers[key_added]``, log-normalized, every gene of
    ``adata``; ``obs[key_added + '_sigma']``; ``uns[key_added]`` the settings) and
    return None; nothing of ``adata`` is overwritten. Otherwise ``adata`` is left as
    it is and a new AnnData is returned.
batch_size
    Cells per denoiser call.
progress
    Show a progress bar over batches.""",
    "design_params": """\
phenotype
    A :class:`rnadiff.design.Markers`, :class:`~rnadiff.design.Signature` or
    :class:`~rnadiff.design.CellState`, a weighted sum or a list of terms.
conditions
    Covariates to condition on, e.g. ``{"cell_type": "CD14+ Monocytes"}``; ``None``:
    unconditional.
n_cells
    Cells per condition.
scale
    Step of the gradient guidance: 1 moves each denoised estimate onto the
    specification (for one term), smaller values go part of the way, 0 is unguided.
through_denoiser
    Differentiate the objective through the network (diffusion posterior sampling).
guide_sigma_min
    Guide only at noise levels at or above this.
langevin_steps, snr
    Langevin corrector steps after each sampler step (0: none) and their
    signal-to-noise ratio.
{guidance}
{transfer}
{sampler}
reference
    Reference cells for relative specifications (marker fold changes); default:
    cells generated without guidance under the same conditions and seed.
realism_reference
    Real cells the realism score compares with; default: the training cells.
layer
    Layer of ``reference`` and ``realism_reference`` holding their expression.
{run}""",
    "rank_perturbations_params": """\
target
    Target cells (AnnData; their registered covariates other than the perturbation
    are their context) or a phenotype specification.
candidates
    Perturbations to rank: names the model knows (trained, or described by their
    features: drugs in its SMILES table, genes with an embedding), or ``{name: SMILES}``
    of drugs to embed from their structure (a model trained with SMILES); default: every
    perturbation of training.
context
    Other covariates for every candidate, e.g. ``{"cell_type": "B cells"}``.
pairs
    Also rank every pair ``A+B`` of the (non-control) candidates.
reference
    Real reference cells (e.g. controls in the context); default: generated ones.
n_cells
    Cells per candidate for the generation score (and designed cells of a spec).
max_target_cells
    Target cells scored (a seeded subset beyond this).
n_noise_levels, n_draws
    Noise levels and draws per level of the likelihood score.
noise_range
    Lowest and highest noise level of the likelihood score, in units of
    ``sigma_data`` (at low noise the condition hardly matters).
steps
    Sampler steps for generation.
design_scale
    Guidance step of the designed cells (specification targets).
anchor
    Correct the generation score's cells as :meth:`predict` corrects counterfactuals:
    each candidate's mean moved to the training means of the measured conditions it is
    built from (its own, the doses around it, the parts of a combination), and a drug
    never measured to the measured drugs' changes by structure; ``False``: the network's
    own cells. The likelihood score is the network's either way.
layer
    Layer of ``target`` and ``reference`` holding their expression.
seed, batch_size, progress
    As in :meth:`generate`.""",
}


def shared_docs(fn):
    """Replace ``{name}`` lines of ``fn``'s docstring by the shared descriptions (which may
    hold placeholders themselves)."""
    texts = SHARED | METHOD_PARAMS

    def fill(match: re.Match) -> str:
        indent, key = match.group(1), match.group(2)
        return "\n".join(indent + line if line else line for line in texts[key].splitlines())

    doc = fn.__doc__
    for _ in range(3):
        doc = re.sub(r"^( *)\{(\w+)\}$", fill, doc, flags=re.M)
    fn.__doc__ = doc
    return fn
