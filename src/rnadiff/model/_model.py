"""``RNADiffusion``: the user-facing model bound to AnnData (scvi-tools style API).

The face only validates, delegates and formats: sampling runs on a
:class:`rnadiff.sampling.SamplingEngine`, training in :mod:`rnadiff.model._training`,
calibration in :mod:`rnadiff.model._calibration`, persistence in
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
from tqdm.auto import tqdm

from rnadiff._config import ModelConfig, TrainConfig
from rnadiff._errors import InputError
from rnadiff.conditioning import _conditions as conditions
from rnadiff.data._covariates import CovariateRegistry, conditions_frame
from rnadiff.data._expression import choose_source
from rnadiff.data._preprocessing import fit_preprocessing, log_expression, scale
from rnadiff.data._validation import check_genes, check_unique_names
from rnadiff.design._phenotype import Phenotype, as_phenotype
from rnadiff.design._workflow import (
    candidate_names,
    check_rank_settings,
    design_cells,
    rank_candidates,
)
from rnadiff.model import _calibration, _persistence, _predict, _training
from rnadiff.model._data import check_cells, fingerprint, source_for
from rnadiff.model._denoising import denoise_sigmas
from rnadiff.model._docs import shared_docs
from rnadiff.model._output import jsonable, plain, to_anndata
from rnadiff.model._passthrough import Passthrough
from rnadiff.networks import Denoiser
from rnadiff.sampling._engine import Guidance, SamplingEngine, transfer_scale
from rnadiff.training import make_ema

logger = logging.getLogger("rnadiff")

SETUP_KEY = "rnadiff_setup"
Transfer = Literal["guide", "compose", "none"]


class _EngineField:
    """An attribute of the model kept on its sampling engine (what sampling knows)."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, model, owner=None):
        return self if model is None else getattr(model.engine, self.name)

    def __set__(self, model, value) -> None:
        setattr(model.engine, self.name, value)


class RNADiffusion:
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

    seen = _EngineField("seen")
    measured = _EngineField("measured")
    effect_scales = _EngineField("effect_scales")
    gene_vectors = _EngineField("gene_vectors")
    prior = _EngineField("prior_fit")

    def __init__(self, adata: ad.AnnData, *, config: ModelConfig | None = None, seed: int = 0):
        if SETUP_KEY not in adata.uns:
            raise InputError("call RNADiffusion.setup_anndata(adata, ...) before creating a model")
        setup = plain(adata.uns[SETUP_KEY])  # h5ad round trips turn lists into arrays
        registry = CovariateRegistry.fit(adata.obs, setup)
        config = config or ModelConfig()
        state = fit_preprocessing(
            adata,
            config=config.preprocess,
            layer=setup.get("layer"),
            use_raw=bool(setup.get("use_raw")),
        )
        logger.info("rnadiff: model of %d cells x %d genes", adata.n_obs, len(state.genes))
        # The initial weights come from their own seeded generator, not from whatever the
        # global torch RNG went through before: the same seed gives the same model.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self._init(config, setup, registry, state)
        self.seen = conditions.condition_keys(registry, adata.obs)
        self.measured = conditions.measured_values(registry, adata.obs)
        self.adata = adata
        self.fingerprint = fingerprint(adata, setup)
        self.gene_vectors = _calibration.fit_gene_vectors(self, adata, seed)
        self.prior = _calibration.fit_prior(self, adata)
        self.passthrough = _calibration.fit_passthrough(self, adata)

    def _init(self, config, setup, registry, state) -> None:
        self.config, self.setup, self.registry, self.preprocess = config, setup, registry, state
        self.denoiser = Denoiser(
            len(state.genes),
            categorical={c.key: len(c.tokens) for c in registry.covariates if c.categorical},
            continuous=[c.key for c in registry.covariates if not c.categorical],
            config=config.network,
            sigma_data=config.diffusion.sigma_data,
        )
        self.ema = make_ema(self.denoiser)
        self.engine = SamplingEngine(self.ema, registry, state, config.diffusion)
        self.train_config: TrainConfig | None = None
        self._trainer_state: tuple[dict, dict] | None = None
        self.step, self.history, self.adata = 0, [], None
        self.spread_scale = 1.0  # calibrate_spread(): widening of counterfactual cells
        self.passthrough: Passthrough | None = None  # training means of unmodelled genes
        self.fingerprint: dict | None = None  # of the training data (resume checks it)

    # ------------------------------------------------------------------ set-up
    @staticmethod
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
        layer: str | None = None,
        use_raw: bool = False,
    ) -> None:
        """Register which ``.obs`` columns condition the model, and where expression lives.

        Parameters
        ----------
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
        layer, use_raw
            Read expression from ``layers[layer]`` or ``adata.raw`` instead of ``X``. By
            default ``X``, unless it holds log-normalized values and raw counts sit beside it
            (``layers['counts']`` or ``adata.raw``): those are read, and the log says so.

        Returns
        -------
        None
            Writes only ``adata.uns['rnadiff_setup']`` (a dict of the arguments).
        """
        if control is not None and perturbation_key is None:
            raise InputError("control given without perturbation_key")
        if adata.n_obs == 0 or adata.n_vars == 0:
            raise InputError(f"adata is empty ({adata.n_obs} cells x {adata.n_vars} genes)")
        check_unique_names(adata.obs_names, what="cell names (obs_names)")
        check_unique_names(adata.var_names, what="gene names (var_names)")
        source, _ = choose_source(adata, layer=layer, use_raw=use_raw)
        setup = {
            "perturbation_key": perturbation_key,
            "control": control,
            "cell_type_key": cell_type_key,
            "batch_key": batch_key,
            "categorical_keys": list(categorical_keys),
            "dose_key": dose_key,
            "time_key": time_key,
            "continuous_keys": list(continuous_keys),
            "combination_sep": combination_sep or None,
            "layer": source.layer,
            "use_raw": source.use_raw,
        }
        CovariateRegistry.fit(adata.obs, setup)  # validates columns, values and the control
        adata.uns[SETUP_KEY] = setup

    # ---------------------------------------------------------------- training
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
        progress: bool = True,
    ) -> RNADiffusion:
        """Train (or continue training) the denoiser on the model's cells, then calibrate.

        Parameters
        ----------
        max_steps, epochs, min_steps, max_epochs, batch_size, lr, seed, checkpoint_every
            Override the fields of ``config`` (see :class:`TrainConfig`). The length:
            ``max_steps`` alone trains exactly that many steps; with ``epochs`` or
            ``min_steps`` the run aims at ``epochs`` passes over the cells, between
            ``min_steps`` and ``max_steps`` (:meth:`TrainConfig.steps_for`); training stops
            after ``max_epochs`` passes (small data sets memorize their cells with many;
            ``max_epochs=0``: no cap).
        checkpoint_dir
            Save checkpoints here (four per run and every ``checkpoint_minutes``, and at the
            end); an interrupted run continues, exactly as it would have gone, with
            ``RNADiffusion.load(checkpoint_dir, adata=adata).train(checkpoint_dir=...)`` on
            the same data (other data are refused).
        config
            Training configuration; default: the previous run's, else ``TrainConfig()``.
        progress
            Show a progress bar.

        Returns
        -------
        RNADiffusion
            ``self``, trained; losses are in ``self.history``. Training ends with
            :meth:`calibrate_effects` and :meth:`calibrate_spread`.
        """
        if self.adata is None:
            raise InputError("this model has no training data; load it with adata=...")
        cfg = _training.run_config(
            self,
            config,
            max_steps=max_steps,
            epochs=epochs,
            min_steps=min_steps,
            max_epochs=max_epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            checkpoint_every=checkpoint_every,
        )
        _training.train(self, cfg, checkpoint_dir=checkpoint_dir, progress=progress)
        return self

    def calibrate_effects(
        self,
        *,
        n_cells: int = 128,
        steps: int = 20,
        seed: int = 0,
        batch_size: int = 2048,
        progress: bool = False,
    ) -> pd.DataFrame:
        """Calibrate the size of each perturbation's predicted effect on the training cells.

        A diffusion model learns a covariate's mean effect from its high noise levels, which
        training visits rarely; its counterfactual effects come out smaller than the ones it
        was trained on. Up to ``n_cells`` training control cells (seeded) are encoded and
        decoded under the control and under each perturbation measured in their context
        (with the continuous covariates of a random cell of that perturbation there); the
        least-squares factor of the predicted onto the measured mean change
        (:func:`rnadiff.conditioning.effect_scales`, clipped to [0.5, 5]) is stored in
        ``effect_scales``; sampling then uses ``D(control) + s * (D(perturbation) -
        D(control))`` where the perturbation was measured in the cell's context.

        Parameters
        ----------
        n_cells
            Training control cells to predict from.
        steps
            Steps of the encoding and decoding (DPM-Solver++(2M)).
        seed
            Seed of the choice of cells.
        batch_size
            Cells per denoiser call.
        progress
            Show a progress bar over the perturbations.

        Returns
        -------
        DataFrame
            One row per perturbation: ``scale``, ``n_cells``, and the norms of the
            ``predicted_effect`` (before scaling) and the ``observed_effect``.
        """
        self._check_trained_on(n_cells=n_cells)
        kw = dict(n_cells=n_cells, steps=steps, seed=seed, batch_size=batch_size)
        return _calibration.calibrate_effects(self, **kw, progress=progress)

    def calibrate_spread(
        self,
        *,
        n_cells: int = 256,
        max_pairs: int = 32,
        min_cells: int = 20,
        steps: int = 20,
        seed: int = 0,
        batch_size: int = 2048,
        progress: bool = False,
    ) -> pd.DataFrame:
        """Calibrate the spread of counterfactual cells on the training cells.

        Encoding a cell to noise and decoding it under another condition loses some of the
        population's spread. This measures it on transports between conditions both measured
        in training: each context's control cells to each perturbation measured there, and
        neighbouring measured values of a continuous covariate, both ways. For each pair (at
        most ``max_pairs``, those with the most target cells; both sides with at least
        ``min_cells`` cells) up to ``n_cells`` source cells are predicted under the target
        and compared with the real target cells
        (:func:`rnadiff.conditioning.spread_ratio`). The mean ratio, clipped to [0.5, 2], is
        ``spread_scale``; :meth:`predict` widens each target condition's counterfactual
        cells around their own mean by it (every gene's mean unchanged).

        Parameters
        ----------
        n_cells
            Source cells predicted per pair.
        max_pairs
            Pairs of conditions used at most.
        min_cells
            Training cells each side of a pair needs.
        steps
            Steps of the encoding and decoding (DPM-Solver++(2M)).
        seed
            Seed of the choice of cells and of the sampler.
        batch_size
            Cells per denoiser call.
        progress
            Show a progress bar over the pairs.

        Returns
        -------
        DataFrame
            One row per pair: ``source`` and ``target`` condition, ``n_source``,
            ``n_target`` and the ``ratio`` of their spreads (no rows: ``spread_scale`` 1).
        """
        self._check_trained_on(n_cells=n_cells, max_pairs=max_pairs)
        if min_cells < 2:
            raise InputError(f"min_cells must be at least 2, got {min_cells}")
        kw = dict(n_cells=n_cells, max_pairs=max_pairs, min_cells=min_cells, steps=steps)
        return _calibration.calibrate_spread(
            self, **kw, seed=seed, batch_size=batch_size, progress=progress
        )

    def _check_trained_on(self, **counts: int) -> None:
        if self.adata is None:
            raise InputError("this model has no training data; load it with adata=...")
        for name, value in counts.items():
            if value < 1:
                raise InputError(f"{name} must be at least 1, got {value}")

    # -------------------------------------------------------------- sampling
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
        {run}

        Returns
        -------
        AnnData
            ``X``: generated log-normalized expression; ``obs``: each cell's condition and
            ``rnadiff_condition`` (its row in ``conditions``); ``uns['rnadiff']``: settings,
            ``transferred_cells``, ``interpolated_cells``, ``effect_scales`` used.
        """
        frame = conditions_frame(conditions, self.registry)
        self.engine.check_sampling(sampler, guidance)
        if n_cells < 1:
            raise InputError(f"n_cells must be at least 1, got {n_cells}")
        soft = self.engine.soft_prior(frame, use=True) if prior else None
        z, obs, plan = self.engine.sample(
            frame,
            n_cells,
            sampler=sampler,
            steps=steps,
            guidance=guidance,
            transfer=transfer,
            transfer_scale=transfer_scale,
            soft=soft,
            seed=seed,
            batch_size=batch_size,
            progress=progress,
            calibrated=calibrated,
        )
        info = {"method": "generate", "sampler": sampler, "steps": steps}
        info |= self._sampling_info(obs, plan, guidance, soft, calibrated) | {"seed": seed}
        return self._output(self.engine.to_log(z), obs, info)

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
        spread: bool = True,
        layer: str | None = None,
        seed: int = 0,
        batch_size: int = 2048,
        progress: bool = True,
    ) -> ad.AnnData:
        """Predict how each source cell would look under a target condition.

        Parameters
        ----------
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
        spread
            Counterfactual only: widen the predicted cells of each target condition around
            their own mean by ``spread_scale`` (:func:`rnadiff.conditioning.widen`: values
            stay non-negative, every gene keeps its mean). Predict a population in one call.
        layer
            Layer of ``source`` holding its expression (default: the training data's, else
            ``X``).
        {run}

        Returns
        -------
        AnnData
            One predicted cell per source cell, same ``obs_names``; ``X``: predicted
            log-normalized expression; ``obs``: the source's covariates with the target
            applied and ``rnadiff_source_<key>`` for each changed covariate;
            ``uns['rnadiff']``: the settings.
        """
        check_cells(source, "source")
        names = _predict.targets(self, perturbation)
        for key in target or {}:
            self.registry[key]  # raises on unknown covariates
        if not target and names == [None]:
            raise InputError("give a perturbation or a target to predict")
        if method not in ("counterfactual", "generate"):
            raise InputError(f"method must be 'counterfactual' or 'generate', got {method!r}")
        self.engine.check_sampling(sampler, guidance)
        if encode_sigma is not None and not 0 < float(encode_sigma) < float("inf"):
            raise InputError(f"encode_sigma must be a positive number, got {encode_sigma}")
        kw = dict(method=method, sampler=sampler, steps=steps, guidance=guidance)
        kw |= dict(transfer=transfer, transfer_scale=transfer_scale, encode_sigma=encode_sigma)
        kw |= dict(prior=prior, calibrated=calibrated, spread=spread, layer=layer, seed=seed)
        kw |= dict(batch_size=batch_size, progress=progress and len(names) == 1)
        pkey = self.registry.perturbation_key
        preds = [
            _predict.predict_one(self, source, {**(target or {}), pkey: p} if p else target, **kw)
            for p in tqdm(names, disable=not progress or len(names) == 1, desc="perturbations")
        ]
        return preds[0] if len(preds) == 1 else _predict.stack(preds, names)

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
            Show a progress bar over batches.

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
        z0 = self.model_space(adata, layer)
        sigmas = denoise_sigmas(self, adata, sigma, source_for(self, adata, layer))
        obs = adata.obs[[k for k in self.registry.keys if k in adata.obs]].copy()
        bar = (lambda b: tqdm(b, desc="denoising", leave=False)) if progress else None
        x = self.engine.to_log(
            self.engine.denoise(z0, sigmas, obs, batch_size=batch_size, progress=bar)
        )
        info = {"method": "denoise", "sigma": sigma if sigma == "auto" else float(sigma)}
        info |= {"sigma_median": float(np.median(sigmas)), "layer": layer}
        if inplace:
            full = self.log_expression(adata, layer=layer, genes=adata.var_names)
            full[:, adata.var_names.get_indexer(self.genes)] = x
            adata.layers[key_added] = full
            adata.obs[f"{key_added}_sigma"] = sigmas
            adata.uns[key_added] = {**info, "n_modelled_genes": len(self.genes)}
            return None
        others = self._other_genes(adata, layer)
        result = self._output(x, adata.obs, info, others=others, names=adata.obs_names)
        result.obs["rnadiff_sigma"] = sigmas
        return result

    # ------------------------------------------------------ design and ranking
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
        {run}

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
        ref = self._log_of(reference, "reference", layer) if reference is not None else None
        x, obs, summary = design_cells(
            self.engine,
            spec,
            frame,
            n_cells=n_cells,
            scale=scale,
            through_denoiser=through_denoiser,
            guide_sigma_min=guide_sigma_min,
            langevin_steps=langevin_steps,
            snr=snr,
            guidance=guidance,
            transfer=transfer,
            transfer_scale=transfer_scale,
            sampler=sampler,
            steps=steps,
            reference_log=ref,
            realism_real=self._realism_cells(realism_reference, seed, layer),
            to_log=lambda a: self._log_of(a, "phenotype cells"),
            seed=seed,
            batch_size=batch_size,
            progress=progress,
        )
        info = {"method": "design", "sampler": "langevin" if langevin_steps else sampler}
        info |= {"steps": steps, "seed": seed, "guidance": jsonable(guidance)}
        info |= {"transfer": transfer, "design": summary}
        return self._output(x, obs, info)

    def rank_perturbations(
        self,
        target: Phenotype | Sequence[Phenotype] | ad.AnnData,
        *,
        candidates: Sequence[str] | None = None,
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
        layer: str | None = None,
        seed: int = 0,
        batch_size: int = 2048,
        progress: bool = True,
    ) -> pd.DataFrame:
        """Rank candidate perturbations by how well they would produce a target phenotype.

        Two scores and a combined rank (mean of the two ranks; ties go to the generation
        score): ``phenotype_score`` (generation: cells under each candidate decoded from one
        shared start, the encoded ``reference`` cells or seeded noise; for target cells the
        cosine of the candidate's predicted mean change and the target's change, for a
        specification the mean objective and ``success_rate``) and ``likelihood_score``
        (diffusion classifier: the target cells' denoising error under the control minus
        under the candidate, averaged over noise levels in ``noise_range``; for a
        specification the targets are designed cells that meet it). ``vote_share``: the
        fraction of target cells whose lowest error is the candidate.

        Parameters
        ----------
        target
            Target cells (AnnData; their registered covariates other than the perturbation
            are their context) or a phenotype specification.
        candidates
            Perturbations to rank; default: every perturbation the model knows.
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
        layer
            Layer of ``target`` and ``reference`` holding their expression.
        seed, batch_size, progress
            As in :meth:`generate`.

        Returns
        -------
        pandas.DataFrame
            One row per candidate, best first: ``perturbation``, ``phenotype_score``,
            (``success_rate``), ``denoising_error``, ``likelihood_score``, ``vote_share``,
            ``rank_phenotype_score``, ``rank_likelihood_score``, ``mean_rank``, ``rank``;
            settings in ``.attrs['rnadiff_rank']``.
        """
        check_rank_settings(
            n_cells=n_cells,
            max_target_cells=max_target_cells,
            n_noise_levels=n_noise_levels,
            n_draws=n_draws,
            noise_range=noise_range,
        )
        pkey = self.registry.perturbation_key
        if pkey is None:
            raise InputError("the model has no perturbation covariate to rank")
        context = dict(context or {})
        if pkey in context:
            raise InputError(f"context must not set the perturbation ({pkey!r}); it is ranked")
        for key in context:
            self.registry[key]  # raises on unknown covariates
        names = candidate_names(self.engine, candidates, pairs)
        rows = pd.DataFrame([{pkey: c, **context} for c in names])
        self.registry.encode(rows, allow_missing=True)  # unknown values raise here
        is_cells = isinstance(target, ad.AnnData)
        return rank_candidates(
            self.engine,
            names,
            context=context,
            target_log=self._log_of(target, "target", layer) if is_cells else None,
            target_obs=target.obs if is_cells else None,
            spec=None if is_cells else as_phenotype(target),
            reference_log=(
                self._log_of(reference, "reference", layer) if reference is not None else None
            ),
            reference_obs=reference.obs if reference is not None else None,
            to_log=lambda a: self._log_of(a, "phenotype cells"),
            n_cells=n_cells,
            max_target_cells=max_target_cells,
            n_noise_levels=n_noise_levels,
            n_draws=n_draws,
            noise_range=noise_range,
            steps=steps,
            design_scale=design_scale,
            seed=seed,
            batch_size=batch_size,
        )

    # ------------------------------------------------------------------ data
    def log_expression(
        self, adata: ad.AnnData, *, layer: str | None = None, genes: Sequence[str] | None = None
    ) -> np.ndarray:
        """Natural log-normalized expression of ``genes`` (default: the modelled genes) for
        ``adata``, normalized as the training cells were (cells x genes, float32).

        Read from ``layer``, else from the training source when ``adata`` has it, else ``X``;
        cells rnadiff produced (``uns['rnadiff']``) are taken as they are.
        """
        genes = self.genes if genes is None else list(genes)
        check_genes(adata.var_names, genes, what="the data")
        if "rnadiff" in adata.uns and layer is None:
            x = adata[:, genes].X
            return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32)
        source = source_for(self, adata, layer)
        return log_expression(
            adata, self.preprocess, layer=source.layer, use_raw=source.use_raw, genes=genes
        )

    def model_space(self, adata: ad.AnnData, layer: str | None = None) -> np.ndarray:
        """Cells in the model's space (scaled log expression of the modelled genes)."""
        return scale(self.log_expression(adata, layer=layer), self.preprocess)

    def _other_genes(self, adata: ad.AnnData, layer: str | None) -> np.ndarray | None:
        """The unmodelled genes of cells ``adata`` (missing ones: their training mean)."""
        if self.passthrough is None:
            return None
        genes = list(self.passthrough.genes)
        out = np.tile(self.passthrough.overall.astype(np.float32), (adata.n_obs, 1))
        have = pd.Index(genes).isin(adata.var_names)
        if not have.all():
            logger.warning(
                "rnadiff: %d of the %d genes the model passes through are not in these cells; "
                "outputs carry their training mean",
                int((~have).sum()),
                len(genes),
            )
        if have.any():
            present = [g for g, h in zip(genes, have, strict=True) if h]
            out[:, have] = self.log_expression(adata, layer=layer, genes=present)
        return out

    def _log_of(self, adata: ad.AnnData, what: str, layer: str | None = None) -> np.ndarray:
        check_cells(adata, what)
        try:
            return self.log_expression(adata, layer=layer)
        except InputError as err:
            raise InputError(f"{what}: {err}") from None

    def _realism_cells(self, given, seed: int, layer=None, max_real: int = 5000):
        """Real cells for the realism score: ``given``, else a seeded sample of the training
        cells, else None."""
        if given is not None:
            return self._log_of(given, "realism_reference", layer)
        if self.adata is None:
            return None
        cells = self.adata
        if cells.n_obs > max_real:  # normalize only the cells the score uses
            rng = np.random.default_rng(seed)
            cells = cells[np.sort(rng.choice(cells.n_obs, max_real, replace=False))]
        return self.log_expression(cells)

    def _sampling_info(self, obs, plan, guidance, soft, calibrated) -> dict:
        return {
            "guidance": jsonable(guidance),
            "transfer": plan.mode,
            "transferred_cells": int(plan.mask.sum()),
            "transfer_scale": plan.scale,
            "interpolated_cells": self.engine.interpolated_cells(obs),
            "perturbation_prior": self.engine.used_prior(soft),
            "effect_scales": self.engine.effect_scales_used(obs, calibrated),
        }

    def _output(self, x_log, obs, info, *, others=None, names=None) -> ad.AnnData:
        if others is None and self.passthrough is not None:  # generated: condition means
            others = self.passthrough.for_conditions(self.registry, obs)
        return to_anndata(x_log, obs, info, state=self.preprocess, others=others, names=names)

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

    # --------------------------------------------------------------- save/load
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
