"""``RNADiffusion``: the user-facing model bound to AnnData (scvi-tools style API).

The face only validates, delegates and formats: sampling runs on a
:class:`rnadiff.sampling.SamplingEngine`, training in :mod:`rnadiff.model._training`,
calibration in :mod:`rnadiff.model._calibration` (its methods in
:mod:`rnadiff.model._calibration_methods`), persistence in
:mod:`rnadiff.model._persistence`, output formatting in :mod:`rnadiff.model._output`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import torch

from rnadiff._config import ModelConfig, TrainConfig
from rnadiff._errors import InputError
from rnadiff.data._covariates import CovariateRegistry, conditions_frame
from rnadiff.data._preprocessing import fit_preprocessing, scale
from rnadiff.design._phenotype import Phenotype, as_phenotype
from rnadiff.design._workflow import design_cells, rank_candidates, ranking_request
from rnadiff.model import (
    _calibration,
    _data,
    _denoising,
    _network,
    _persistence,
    _predict,
    _training,
)
from rnadiff.model._calibration_methods import Calibration
from rnadiff.model._data import EngineField, check_cells
from rnadiff.model._docs import shared_docs
from rnadiff.model._output import jsonable, output, plain
from rnadiff.model._passthrough import Passthrough
from rnadiff.sampling._engine import Guidance
from rnadiff.sampling._transfer_plan import transfer_scale
from rnadiff.training._distributed import shared

logger = logging.getLogger("rnadiff")

SETUP_KEY = "rnadiff_setup"
Transfer = Literal["guide", "compose", "none"]


class RNADiffusion(Calibration):
    """A conditional score-based diffusion model of single-cell expression profiles.

    Parameters
    ----------
    adata
        Training cells, registered with :meth:`setup_anndata`; read, never modified.
    config
        Model configuration (preprocessing, diffusion, network); defaults are recommended.
    seed
        Seed of the initial weights (training has its own seed in ``TrainConfig``).

    Attributes
    ----------
    step, history
        Training steps taken, and the loss logged along the way.
    effect_scales
        ``{perturbation: factor}`` found by :meth:`calibrate_effects`.
    spread_scale
        Widening of counterfactual cells found by :meth:`calibrate_spread` (1: none).
    anchors
        Residuals of the measured conditions' means found by :meth:`calibrate_means`
        (None: none).
    seen, measured
        The categorical conditions and the continuous covariates' values of training.
    gene_vectors, prior
        The expression prior of perturbations never seen in training (``prior=True``): the
        genes' loadings on the training cells' principal axes, and the fitted trust in
        co-expression (:func:`rnadiff.conditioning.fit_trust`).
    engine
        The :class:`rnadiff.sampling.SamplingEngine` every sampling method runs on.

    Examples
    --------
    >>> RNADiffusion.setup_anndata(adata, perturbation_key="condition", control="ctrl",
    ...                            cell_type_key="cell_type")
    >>> model = RNADiffusion(adata)
    >>> model.train()
    >>> cells = model.generate({"condition": "stim", "cell_type": "B cells"}, n_cells=200)
    >>> pred = model.predict(ctrl_b_cells, perturbation="stim")
    """

    seen = EngineField("seen")
    measured = EngineField("measured")
    effect_scales = EngineField("effect_scales")
    gene_vectors = EngineField("gene_vectors")
    prior = EngineField("prior_fit")
    anchors = EngineField("anchors")

    def __init__(
        self,
        adata: ad.AnnData,
        *,
        config: ModelConfig | None = None,
        gene_embeddings: pd.DataFrame | None = None,
        seed: int = 0,
    ):
        if SETUP_KEY not in adata.uns:
            raise InputError("call RNADiffusion.setup_anndata(adata, ...) before creating a model")
        setup = plain(adata.uns[SETUP_KEY])  # h5ad round trips turn lists into arrays
        registry = CovariateRegistry.fit(adata.obs, setup)
        registry, genes = _network.gene_table(registry, gene_embeddings, adata.var_names)
        config = config or ModelConfig()
        source = {"layer": setup.get("layer"), "use_raw": bool(setup.get("use_raw"))}
        state = shared(lambda: fit_preprocessing(adata, config=config.preprocess, **source))
        logger.info("rnadiff: model of %d cells x %d genes", adata.n_obs, len(state.genes))
        # The initial weights come from their own seeded generator, not from whatever the
        # global torch RNG went through before: the same seed gives the same model.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self._init(config, setup, registry, state, genes)
        _calibration.fit_statistics(self, adata, seed)  # what sampling needs to know

    def _init(self, config, setup, registry, state, genes=None) -> None:
        self.config, self.setup, self.registry, self.preprocess = config, setup, registry, state
        self.gene_table = genes  # the user's gene embeddings (None: none)
        _network.build(self, genes)  # denoiser, EMA copy, sampling engine
        self.train_config: TrainConfig | None = None
        self._trainer_state: tuple[dict, dict] | None = None
        self.step, self.history, self.adata = 0, [], None
        self.spread_scale = 1.0  # calibrate_spread(): widening of counterfactual cells
        self.anchors = None  # calibrate_means(): residuals of measured means (on the engine)
        self.passthrough: Passthrough | None = None  # training means of unmodelled genes
        self.fingerprint: dict | None = None  # of the training data (resume checks it)

    @staticmethod
    @shared_docs
    def setup_anndata(
        adata: ad.AnnData,
        *,
        perturbation_key: str | None = None,
        control: str | None = None,
        cell_type_key: str | None = None,
        batch_key: str | None = None,
        categorical_keys: Sequence[str] = (),
        dose_key: str | None = None,
        time_key: str | None = None,
        continuous_keys: Sequence[str] = (),
        combination_sep: str | None = "+",
        smiles_key: str | None = None,
        smiles: Mapping[str, str] | None = None,
        layer: str | None = None,
        use_raw: bool = False,
    ) -> None:
        """Register which ``.obs`` columns condition the model, and where expression lives.

        Parameters
        ----------
        {setup_anndata_params}

        Returns
        -------
        None
            Writes only ``adata.uns['rnadiff_setup']`` (a dict of the arguments).
        """
        _data.setup(**locals())  # checks them and records them in adata.uns

    @shared_docs
    def train(
        self,
        *,
        max_steps: int | None = None,
        epochs: float | None = None,
        min_steps: int | None = None,
        max_epochs: float | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        seed: int | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int | None = None,
        config: TrainConfig | None = None,
        device: str = "auto",
        compile: bool = False,
        progress: bool = True,
    ) -> RNADiffusion:
        """Train (or continue training) the denoiser on the model's cells, then calibrate.

        Parameters
        ----------
        {train_params}

        Returns
        -------
        RNADiffusion
            ``self``, trained; losses are in ``self.history``. Training ends with
            :meth:`calibrate_effects` and :meth:`calibrate_spread`.
        """
        if self.adata is None:
            raise InputError("this model has no training data; load it with adata=...")
        length = dict(max_steps=max_steps, epochs=epochs, min_steps=min_steps)
        length |= dict(max_epochs=max_epochs, checkpoint_every=checkpoint_every)
        cfg = _training.run_config(self, config, batch_size=batch_size, lr=lr, seed=seed, **length)
        run = dict(checkpoint_dir=checkpoint_dir, progress=progress, device=device)
        _training.train(self, cfg, compile=compile, **run)
        return self

    @shared_docs
    def generate(
        self,
        conditions: Mapping | Sequence[Mapping] | pd.DataFrame,
        *,
        n_cells: int = 100,
        sampler: str = "dpmpp_2m",
        steps: int = 20,
        guidance: Guidance = 1.0,
        transfer: Transfer = "compose",
        transfer_scale: float | None = None,
        prior: bool = False,
        calibrated: bool = True,
        counts: bool = False,
        anchor: bool = True,
        seed: int = 0,
        batch_size: int = 2048,
        progress: bool = True,
    ) -> ad.AnnData:
        """Generate cells under each condition.

        A continuous covariate (time, dose) asked for strictly between two values measured in
        training is interpolated: the denoiser is the linear mix of the denoiser at the two
        neighbouring measured values (:func:`rnadiff.sampling.interpolated_covariate`);
        values outside the measured range are left to the network.

        Parameters
        ----------
        conditions
            One condition (``{"perturbation": "stim", "cell_type": "B cells"}``), a list of
            them or a DataFrame with one row per condition; covariates left out are
            unspecified. Combinations such as ``"A+B"`` may be new if each part is known.
        n_cells
            Cells per condition.
        {sampler}
        {guidance}
        {transfer}
        {prior}
        {calibrated}
        {counts}
        anchor
            Move the generated cells to the measured means: each cell is decoded from the
            same noise under its context's control too; both decodes are shifted by the
            control's generation bias (the training level of the context's control minus the
            mean of its decodes), and the cells of a perturbation are corrected as
            :meth:`predict` corrects counterfactuals of control cells (mean anchors; a drug
            never measured moved to the measured drugs' blend). Twice the sampling work;
            cells whose context has no measured control are left as generated, as with
            ``False`` (the network's own cells). The cells corrected are counted in
            ``uns['rnadiff']['anchored_cells']``.
        {run}

        Returns
        -------
        AnnData
            ``X``: generated log-normalized expression (``counts``: of ``layers['counts']``);
            ``obs``: each cell's condition and
            ``rnadiff_condition`` (its row in ``conditions``); ``uns['rnadiff']``: settings,
            ``transferred_cells``, ``interpolated_cells``, ``effect_scales`` used,
            ``anchored_cells``.
        """
        kw = dict(sampler=sampler, steps=steps, guidance=guidance, transfer=transfer)
        kw |= dict(transfer_scale=transfer_scale, prior=prior, calibrated=calibrated, seed=seed)
        kw |= dict(counts=counts, anchor=anchor)
        return _predict.generate(self, conditions, n_cells, batch_size, progress, **kw)

    @shared_docs
    def predict(
        self,
        source: ad.AnnData,
        *,
        perturbation: str | Sequence[str] | None = None,
        target: Mapping[str, object] | None = None,
        method: Literal["counterfactual", "generate"] = "counterfactual",
        sampler: str = "dpmpp_2m",
        steps: int = 20,
        guidance: Guidance = 1.0,
        transfer: Transfer = "compose",
        transfer_scale: float | None = None,
        encode_sigma: float | None = None,
        prior: bool = False,
        calibrated: bool = True,
        anchor: bool = True,
        counts: bool = False,
        spread: bool = True,
        layer: str | None = None,
        seed: int = 0,
        batch_size: int = 2048,
        progress: bool = True,
    ) -> ad.AnnData:
        """Predict how each source cell would look under a target condition.

        Parameters
        ----------
        {predict_params}

        Returns
        -------
        AnnData
            One predicted cell per source cell, same ``obs_names``; ``X``: predicted
            log-normalized expression; ``obs``: the source's covariates with the target
            applied and ``rnadiff_source_<key>`` for each changed covariate;
            ``uns['rnadiff']``: the settings.
        """
        kw = dict(method=method, sampler=sampler, steps=steps, guidance=guidance, counts=counts)
        kw |= dict(transfer=transfer, transfer_scale=transfer_scale, encode_sigma=encode_sigma)
        kw |= dict(prior=prior, calibrated=calibrated, spread=spread, layer=layer, seed=seed)
        kw["anchor"] = anchor
        return _predict.predict(self, source, perturbation, target, batch_size, progress, **kw)

    @shared_docs
    def denoise(
        self,
        adata: ad.AnnData,
        *,
        sigma: float | Literal["auto"] = "auto",
        layer: str | None = None,
        key_added: str = "rnadiff_denoised",
        inplace: bool = False,
        batch_size: int = 2048,
        progress: bool = True,
    ) -> ad.AnnData | None:
        """Denoise cells: the model's estimate of each clean profile (Tweedie's formula).

        Each cell, in the model's space, is taken as a clean profile plus Gaussian noise of
        level ``sigma``; the denoiser returns its posterior mean ``E[x0 | x]`` under the
        model's distribution of the cell's condition (registered covariates in ``obs``;
        missing ones unset). It pulls cells towards the training cells, so it suits a model
        trained on deeper cells of the same kind (``TrainConfig(thinning=0.5)`` teaches it
        what shallower copies of its cells look like). Genes the model does not model keep
        the cells' own values.

        Parameters
        ----------
        {denoise_params}

        Returns
        -------
        AnnData or None
            One denoised cell per input cell, same ``obs_names`` and ``obs`` plus
            ``rnadiff_sigma``; ``X``: log-normalized expression; ``uns['rnadiff']``.
        """
        check_cells(adata, "adata")
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        if inplace and key_added in adata.layers:
            raise InputError(f"adata.layers[{key_added!r}] exists; give another key_added")
        kw = dict(layer=layer, key_added=key_added, inplace=inplace, batch_size=batch_size)
        return _denoising.denoise(self, adata, sigma, progress=progress, **kw)

    @shared_docs
    def design(
        self,
        phenotype: Phenotype | Sequence[Phenotype],
        *,
        conditions: Mapping | Sequence[Mapping] | pd.DataFrame | None = None,
        n_cells: int = 100,
        scale: float = 1.0,
        through_denoiser: bool = False,
        guide_sigma_min: float = 0.0,
        langevin_steps: int = 0,
        snr: float = 0.1,
        guidance: Guidance = 1.0,
        transfer: Transfer = "compose",
        transfer_scale: float | None = None,
        sampler: str = "dpmpp_2m",
        steps: int = 20,
        reference: ad.AnnData | None = None,
        realism_reference: ad.AnnData | None = None,
        layer: str | None = None,
        seed: int = 0,
        batch_size: int = 2048,
        progress: bool = True,
    ) -> ad.AnnData:
        """Generate cells that meet a phenotype, by gradient guidance of the sampler.

        Parameters
        ----------
        {design_params}

        Returns
        -------
        AnnData
            Designed cells (log-normalized). ``obs``: the conditions, ``objective``,
            ``distance_to_spec``, ``meets_spec``, ``meets_term<i>`` and ``realism`` (distance
            to the nearest real cell over the median real-to-real one; about 1 is realistic).
            ``uns['rnadiff']``: the settings and, under ``design``, success rate and realism
            of designed and unguided cells.
        """
        frame = conditions_frame({} if conditions is None else conditions, self.registry)
        spec = as_phenotype(phenotype)
        ref = _data.log_of(self, reference, "reference", layer) if reference is not None else None
        kw = dict(n_cells=n_cells, scale=scale, through_denoiser=through_denoiser, snr=snr)
        kw |= dict(guide_sigma_min=guide_sigma_min, langevin_steps=langevin_steps, seed=seed)
        kw |= dict(guidance=guidance, transfer=transfer, transfer_scale=transfer_scale)
        kw |= dict(sampler=sampler, steps=steps, batch_size=batch_size, progress=progress)
        real = _data.realism_cells(self, realism_reference, seed, layer)
        to_log = lambda a: _data.log_of(self, a, "phenotype cells")  # noqa: E731
        engine = self.engine.for_frame(frame)  # perturbations known by their features
        x, obs, summary = design_cells(
            engine, spec, frame, reference_log=ref, realism_real=real, to_log=to_log, **kw
        )
        info = {"method": "design", "sampler": "langevin" if langevin_steps else sampler}
        info |= {"steps": steps, "seed": seed, "guidance": jsonable(guidance)}
        info |= {"transfer": transfer, "design": summary}
        return output(self, x, obs, info)

    @shared_docs
    def rank_perturbations(
        self,
        target: Phenotype | Sequence[Phenotype] | ad.AnnData,
        *,
        candidates: Sequence[str] | Mapping[str, str] | None = None,
        context: Mapping[str, object] | None = None,
        pairs: bool = False,
        reference: ad.AnnData | None = None,
        n_cells: int = 200,
        max_target_cells: int = 400,
        n_noise_levels: int = 12,
        n_draws: int = 2,
        noise_range: tuple[float, float] = (0.75, 3.0),
        steps: int = 20,
        design_scale: float = 1.0,
        anchor: bool = True,
        layer: str | None = None,
        seed: int = 0,
        batch_size: int = 2048,
        progress: bool = True,
    ) -> pd.DataFrame:
        """Rank candidate perturbations by how well they would produce a target phenotype.

        Two scores and a combined rank (mean of the two ranks; ties go to the first):
        ``phenotype_score`` (generation: cells under each candidate decoded from one shared
        start; for target cells the cosine of the predicted and the target's mean change,
        for a specification its mean objective and ``success_rate``) and
        ``likelihood_score`` (diffusion classifier: the target cells' denoising error under
        the control minus under the candidate). See the user guide (design and ranking).

        Parameters
        ----------
        {rank_perturbations_params}

        Returns
        -------
        pandas.DataFrame
            One row per candidate, best first: ``perturbation``, ``phenotype_score``,
            (``success_rate``), ``denoising_error``, ``likelihood_score``, ``vote_share``,
            ``rank_phenotype_score``, ``rank_likelihood_score``, ``mean_rank``, ``rank``;
            settings in ``.attrs['rnadiff_rank']``.
        """
        counts = dict(n_cells=n_cells, max_target_cells=max_target_cells)
        counts |= dict(n_noise_levels=n_noise_levels, n_draws=n_draws)
        engine = self.engine  # candidates given with SMILES: embedded from their structure
        if isinstance(candidates, Mapping):
            engine = engine.with_molecules(candidates)
        engine = engine.with_known(list(candidates or ()))
        names, context = ranking_request(
            engine, candidates, context, pairs, noise_range=noise_range, **counts
        )
        is_cells = isinstance(target, ad.AnnData)
        ref = _data.log_of(self, reference, "reference", layer) if reference is not None else None
        return rank_candidates(
            engine,
            names,
            context=context,
            target_log=_data.log_of(self, target, "target", layer) if is_cells else None,
            target_obs=target.obs if is_cells else None,
            spec=None if is_cells else as_phenotype(target),
            reference_log=ref,
            reference_obs=reference.obs if reference is not None else None,
            to_log=lambda a: _data.log_of(self, a, "phenotype cells"),
            noise_range=noise_range,
            steps=steps,
            design_scale=design_scale,
            seed=seed,
            batch_size=batch_size,
            adjust=_predict.anchoring(self, engine) if anchor else None,
            **counts,
        )

    def add_molecules(self, smiles: Mapping[str, str]) -> None:
        """Add drugs ``{name: SMILES}`` to the model's table (a model trained with SMILES):
        :meth:`predict`, :meth:`generate` and :meth:`rank_perturbations` then embed them from
        their structure. Saved with the model."""
        self.engine = self.engine.with_molecules(smiles)
        pkey = self.registry.perturbation_key
        table = tuple(sorted(self.engine.features.molecules.items()))
        self.registry = self.engine.registry = self.registry.replace(pkey, molecules=table)

    def log_expression(
        self, adata: ad.AnnData, *, layer: str | None = None, genes: Sequence[str] | None = None
    ) -> np.ndarray:
        """Natural log-normalized expression of ``genes`` (default: the modelled genes) for
        ``adata``, normalized as the training cells were (cells x genes, float32): read from
        ``layer``, else the training source when ``adata`` has it, else ``X``; rnadiff's own
        outputs (``uns['rnadiff']``) as they are."""
        return _data.log_expression(self, adata, layer, genes)

    def model_space(self, adata: ad.AnnData, layer: str | None = None) -> np.ndarray:
        """Cells in the model's space (scaled log expression of the modelled genes)."""
        return scale(self.log_expression(adata, layer=layer), self.preprocess)

    @property
    def genes(self) -> list[str]:
        """The model's genes, in the order of generated profiles."""
        return list(self.preprocess.genes)

    def __repr__(self) -> str:
        covs = ", ".join(
            f"{c.key} ({c.role}, {len(c.tokens) or 'continuous'})" for c in self.registry.covariates
        )
        return (
            f"RNADiffusion({len(self.preprocess.genes)} genes; "
            f"input: {self.preprocess.description}; "
            f"covariates: {covs or 'none'}; trained {self.step} steps)"
        )

    def save(self, path: str | os.PathLike) -> None:
        """Save to a folder: ``config.json`` + safetensors, atomically (no pickle)."""
        _persistence.save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, *, adata: ad.AnnData | None = None) -> RNADiffusion:
        """Load a saved model; pass ``adata`` (the training cells) to continue training.

        Parameters
        ----------
        path
            Folder written by :meth:`save` or by training with a ``checkpoint_dir``.
        adata
            Training data to bind; its genes and covariates must match the model's.

        Returns
        -------
        RNADiffusion
        """
        return _persistence.load(cls, path, adata=adata)


__all__ = ["RNADiffusion", "transfer_scale"]
