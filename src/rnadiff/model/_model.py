"""``RNADiffusion``: the user-facing model bound to AnnData (scvi-tools style API)."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from rnadiff._config import ModelConfig, TrainConfig
from rnadiff._errors import InputError
from rnadiff._version import __version__
from rnadiff.conditioning._calibration import SPREAD_RANGE, effect_scales, spread_ratio, widen
from rnadiff.conditioning._prior import (
    TRUST_GRID,
    blend_prior,
    expression_prior,
    fit_trust,
    gene_vectors,
)
from rnadiff.conditioning._transfer import (
    context_of,
    interpolation_neighbours,
    measured_contexts,
    nearest_context_weights,
)
from rnadiff.data._covariates import CovariateRegistry, conditions_frame, numeric_value
from rnadiff.data._preprocessing import (
    PreprocessState,
    detect_input_type,
    expression_matrix,
    fit_preprocessing,
    log_expression,
    scale,
    total_counts,
    unscale,
)
from rnadiff.data._validation import check_genes
from rnadiff.design._phenotype import Phenotype
from rnadiff.diffusion import karras_sigmas
from rnadiff.diffusion._count_noise import technical_sigma
from rnadiff.networks import Denoiser
from rnadiff.sampling import (
    SAMPLERS,
    classifier_free_guidance,
    compositional_guidance,
    effect_scaling,
    encode,
    interpolated_covariate,
)
from rnadiff.training import Trainer, load_checkpoint, make_ema, save_checkpoint
from rnadiff.training._thinning import CountThinning

logger = logging.getLogger("rnadiff")

SETUP_KEY = "rnadiff_setup"
Guidance = float | Mapping[str, float]
Transfer = Literal["guide", "compose", "none"]
TRANSFER_SCALES = {"guide": 3.0, "compose": 1.5}  # chosen on Kang 2018 folds, see README


KEEP_ENCODING_MAX = 2**26  # values of the last encoding kept by predict (256 MB)


class RNADiffusion:
    """A conditional score-based diffusion model of single-cell expression profiles.

    Parameters
    ----------
    adata
        Training cells, registered with :meth:`setup_anndata`. The model reads ``adata`` and
        never modifies it.
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
    gene_vectors
        The genes' loadings on the training cells' principal axes, for the expression prior of
        perturbations never seen in training (``prior=True``).
    prior
        That prior's fit on the seen perturbations: ``trust`` in co-expression (``None``: not
        fitted, co-expression alone), ``shares`` (training cells per seen perturbation),
        ``grid`` and ``loo_error`` (the leave-one-out error at each trust tried); see
        :func:`rnadiff.conditioning._prior.fit_trust`.

    Examples
    --------
    >>> RNADiffusion.setup_anndata(adata, perturbation_key="condition", control="ctrl",
    ...                            cell_type_key="cell_type")
    >>> model = RNADiffusion(adata)
    >>> model.train(max_steps=2000)
    >>> cells = model.generate({"condition": "stim", "cell_type": "B cells"}, n_cells=200)
    >>> pred = model.predict(ctrl_b_cells, perturbation="stim")
    """

    def __init__(self, adata: ad.AnnData, *, config: ModelConfig | None = None, seed: int = 0):
        if SETUP_KEY not in adata.uns:
            raise InputError("call RNADiffusion.setup_anndata(adata, ...) before creating a model")
        setup = _plain(adata.uns[SETUP_KEY])  # h5ad round trips turn lists into arrays
        registry = CovariateRegistry.fit(adata.obs, setup)
        config = config or ModelConfig()
        state = fit_preprocessing(adata, config=config.preprocess, layer=setup.get("layer"))
        logger.info("rnadiff: model of %d cells x %d genes", adata.n_obs, len(state.genes))
        # The initial weights come from their own seeded generator, not from whatever the
        # global torch RNG went through before: the same seed gives the same model.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self._init(config, setup, registry, state)
        self.seen = self._condition_keys(adata.obs)
        self.measured = self._measured_values(adata.obs)
        self.adata = adata
        self.gene_vectors = self._gene_vectors(adata, seed)
        self.prior = self._fit_prior(adata)

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
        self.train_config: TrainConfig | None = None
        self._trainer_state: tuple[dict, dict] | None = None
        self.step, self.history, self.adata = 0, [], None
        self.seen: set[tuple[str, ...]] = set()
        self.measured: dict[str, list[float]] = {}  # continuous covariates' training values
        self.gene_vectors: np.ndarray | None = None  # expression prior of unseen perturbations
        self.prior: dict | None = None  # its fitted trust in co-expression (see _fit_prior)
        self.effect_scales: dict[str, float] = {}  # calibrate_effects(): factor per perturbation
        self.spread_scale = 1.0  # calibrate_spread(): widening of counterfactual cells
        self._last_encoding: tuple[bytes, torch.Tensor] | None = None  # see _encode

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
        combination_sep: str = "+",
        layer: str | None = None,
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
            Separator of combination perturbations.
        layer
            Layer holding the expression values instead of ``X``.

        Returns
        -------
        None
            Writes only ``adata.uns['rnadiff_setup']`` (a dict of the arguments); ``X``,
            ``obs``, ``var`` and layers are left as they are.
        """
        setup = {
            "perturbation_key": perturbation_key,
            "control": control,
            "cell_type_key": cell_type_key,
            "batch_key": batch_key,
            "categorical_keys": list(categorical_keys),
            "dose_key": dose_key,
            "time_key": time_key,
            "continuous_keys": list(continuous_keys),
            "combination_sep": combination_sep,
            "layer": layer,
        }
        if control is not None and perturbation_key is None:
            raise InputError("control given without perturbation_key")
        if layer is not None and layer not in adata.layers:
            raise InputError(f"layer {layer!r} not found; layers: {list(adata.layers.keys())}")
        CovariateRegistry.fit(adata.obs, setup)  # validates columns, values and the control
        adata.uns[SETUP_KEY] = setup

    # ---------------------------------------------------------------- training
    def train(
        self,
        *,
        max_steps: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        seed: int | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int | None = None,
        config: TrainConfig | None = None,
        progress: bool = True,
    ) -> RNADiffusion:
        """Train (or continue training) the denoiser on the model's cells.

        Parameters
        ----------
        max_steps, batch_size, lr, seed, checkpoint_every
            Override the corresponding fields of ``config``. A ``max_steps`` given here trains
            exactly that many steps (``epochs=None``; ``max_epochs`` still applies); by default
            a run aims at ``config.epochs`` passes over the cells, kept between
            ``config.min_steps`` and ``config.max_steps`` (``TrainConfig.steps_for``).
        checkpoint_dir
            Save a checkpoint here every ``checkpoint_every`` steps and at the end; a run
            interrupted later continues with ``RNADiffusion.load(checkpoint_dir, adata=adata)``
            followed by ``train()``.
        config
            Training configuration; default: the one of the previous run, else ``TrainConfig()``.
            Training stops after ``config.max_epochs`` passes over the cells (default 200) when
            that comes first: on a few hundred cells, 1200 steps of 128 cells are 800 passes,
            and the network memorizes its cells (on the HSMM time course, counterfactual cells
            lost half their spread; README).
        progress
            Show a progress bar.

        Returns
        -------
        RNADiffusion
            ``self``, trained; losses are in ``self.history``.
        """
        if self.adata is None:
            raise InputError("this model has no training data; load it with adata=...")
        base = config or self.train_config or TrainConfig()
        overrides = {
            k: v
            for k, v in dict(
                max_steps=max_steps,
                batch_size=batch_size,
                lr=lr,
                seed=seed,
                checkpoint_every=checkpoint_every,
            ).items()
            if v is not None
        }
        if max_steps is not None:  # an explicit length: exactly that many steps
            overrides["epochs"] = None
        cfg = TrainConfig(**{**base.to_dict(), **overrides})
        x = torch.from_numpy(self._model_space(self.adata))
        cond = self._cond(self.adata.obs)
        steps = cfg.steps_for(x.shape[0])
        uncapped = dataclasses.replace(cfg, max_epochs=None).steps_for(x.shape[0])
        if steps < uncapped:
            logger.info(
                "rnadiff: training stops at %d of %d steps: max_epochs=%g passes over %d "
                "cells (small data sets memorize their cells with many passes; "
                "max_epochs=None trains all steps)",
                steps,
                uncapped,
                cfg.max_epochs,
                x.shape[0],
            )
        trainer = Trainer(
            self.denoiser,
            config=dataclasses.replace(cfg, max_steps=steps),
            diffusion=self.config.diffusion,
            p_drop=self.config.p_drop,
            ema=self.ema,
        )
        if self._trainer_state is not None:
            trainer.load_state(*self._trainer_state)
        self.train_config = cfg

        def checkpoint(t: Trainer) -> None:
            self.step, self.history = t.step, t.history
            self._trainer_state = t.state_tensors()
            self.save(checkpoint_dir)

        trainer.fit(
            x,
            cond,
            on_checkpoint=checkpoint if checkpoint_dir else None,
            progress=progress,
            corrupt=self._thinning(cfg.thinning) if cfg.thinning else None,
        )
        self.step, self.history = trainer.step, trainer.history
        self._trainer_state = trainer.state_tensors()
        if cfg.calibration_cells:
            self.calibrate_effects(n_cells=cfg.calibration_cells, seed=cfg.seed, progress=progress)
        if cfg.spread_cells:
            self.calibrate_spread(n_cells=cfg.spread_cells, seed=cfg.seed, progress=progress)
        if checkpoint_dir and (cfg.calibration_cells or cfg.spread_cells):
            self.save(checkpoint_dir)
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
        was trained on (on Papalexi 2021 about half, weak knock-outs much less; see the
        README). This measures it: up to ``n_cells`` training control cells (seeded) are
        encoded and decoded under the control (their reconstruction) and under each
        perturbation measured in their context (with the continuous covariates, e.g. dose, of
        a random cell of that perturbation there); the factor ``s`` that best maps the mean
        predicted change onto the measured training change (least squares over genes,
        :func:`rnadiff.conditioning._calibration.effect_scales`, clipped to [0.5, 5]) is
        stored in ``effect_scales``. ``generate``, ``predict``, ``design`` and
        ``rank_perturbations`` then use ``D(control) + s * (D(perturbation) - D(control))``
        (:func:`rnadiff.sampling.effect_scaling`) for cells of a perturbation in a context
        where it was measured; transferred cells keep their ``transfer_scale``. ``train`` runs
        this at its end (``TrainConfig.calibration_cells``; 0 turns it off).

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
        if self.adata is None:
            raise InputError("this model has no training data; load it with adata=...")
        if n_cells < 1:
            raise InputError(f"n_cells must be at least 1, got {n_cells}")
        self.effect_scales = {}
        columns = ["scale", "n_cells", "predicted_effect", "observed_effect"]
        pkey, control = self.registry.perturbation_key, self.registry.control
        empty = pd.DataFrame(columns=columns).rename_axis("perturbation")
        if pkey is None or control is None:
            return empty
        obs = self.adata.obs[[k for k in self.registry.keys if k in self.adata.obs]]
        labels = self._context_and_perturbation(obs)
        codes, groups = pd.factorize(pd.Series(labels, dtype=object))
        members = {g: np.flatnonzero(codes == i) for i, g in enumerate(groups)}
        log = self.log_expression(self.adata)
        means = {g: log[rows].mean(0) for g, rows in members.items()}
        ok = [None not in ctx and p == control for ctx, p in labels]
        pool = np.flatnonzero(ok)
        perts = sorted(
            {p for ctx, p in means if p not in (None, control) and (ctx, control) in means}
        )
        if not len(pool) or not perts:
            return empty
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(pool, size=min(n_cells, len(pool)), replace=False))
        obs_src = obs.iloc[idx]
        ctx_src = [labels[i][0] for i in idx]
        cond_src = self._cond(obs_src)
        sigmas = self._sigmas(steps)
        z0 = torch.from_numpy(self._model_space(self.adata[idx]))
        x = self._encode(z0, sigmas, cond_src, batch_size, False, obs=obs_src)
        gen = torch.Generator().manual_seed(seed)

        # continuous covariates (dose, time) of the decoded cells: those of a random cell of
        # the perturbation in the same context, so the prediction matches what was measured
        continuous = [c.key for c in self.registry.covariates if not c.categorical]

        def decode(pairs: list[tuple[int, str]]) -> np.ndarray:
            """Decode cell ``i`` of the sample under perturbation ``p`` for each pair (under
            the control: the cell's own continuous covariates)."""
            rows = np.array([i for i, _ in pairs])
            target = obs_src.iloc[rows].copy()
            target[pkey] = pd.Categorical([p for _, p in pairs])
            if continuous:
                donors = [
                    idx[i] if p == control else rng.choice(members[(ctx_src[i], p)])
                    for i, p in pairs
                ]
                for key in continuous:
                    target[key] = obs[key].to_numpy()[donors]
            none = (np.zeros(len(target), dtype=bool), "none", None)
            z = self._run(
                "dpmpp_2m",
                x[torch.from_numpy(rows)],
                sigmas,
                self._cond(target),
                1.0,
                gen,
                batch_size,
                False,
                transfer=none,
                obs=target,
                calibrated=False,
            )
            return unscale(z, self.preprocess)

        recon = decode([(i, control) for i in range(len(idx))])
        cells = {p: [i for i, c in enumerate(ctx_src) if (c, p) in means] for p in perts}
        perts = [p for p in perts if cells[p]]
        chunk = max(1, 8192 // len(idx))  # perturbations decoded together
        predicted, observed = {}, {}
        for start in tqdm(
            range(0, len(perts), chunk), disable=not progress, desc="calibrating", leave=False
        ):
            part = perts[start : start + chunk]
            pairs = [(i, p) for p in part for i in cells[p]]
            out = decode(pairs)
            at = 0
            for p in part:
                rows = np.array(cells[p])
                predicted[p] = (out[at : at + len(rows)] - recon[rows]).mean(0)
                at += len(rows)
                observed[p] = np.mean(
                    [means[(ctx_src[i], p)] - means[(ctx_src[i], control)] for i in rows], axis=0
                )
        counts = {p: len(cells[p]) for p in perts}
        self.effect_scales = effect_scales(predicted, observed)
        table = pd.DataFrame(
            {
                "scale": self.effect_scales,
                "n_cells": counts,
                "predicted_effect": {k: float(np.linalg.norm(v)) for k, v in predicted.items()},
                "observed_effect": {k: float(np.linalg.norm(v)) for k, v in observed.items()},
            },
            columns=columns,
        ).rename_axis("perturbation")
        if len(table):
            logger.info(
                "rnadiff: effect calibration on %d control cells: scale median %.2f (%.2f-%.2f)",
                len(idx),
                table.scale.median(),
                table.scale.min(),
                table.scale.max(),
            )
        return table

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
        population's spread: on Kang 2018 the predicted stimulated cells of a held-out cell
        type have a total variance of 982 against the real cells' 1097, on the HSMM time
        course 221 against 281 (README). This measures it on transports between conditions
        that were both measured in training: each context's control cells to each
        perturbation measured there, and between neighbouring measured values of a
        continuous covariate (time, dose) with everything else equal, both ways. For each
        such pair (at most ``max_pairs``, those with the most target cells; both sides with
        at least ``min_cells`` cells) up to ``n_cells`` source cells (seeded) are predicted
        under the target (:meth:`predict`, calibrated effects, not widened) and compared with
        the real target cells (:func:`rnadiff.conditioning._calibration.spread_ratio`). The
        mean ratio, clipped to [0.5, 2], is stored in ``spread_scale``; :meth:`predict`
        then widens each target condition's counterfactual cells around their own mean by it
        (``spread=True``), which leaves the predicted mean change as it was. ``train`` runs
        this at its end (``TrainConfig.spread_cells``; 0 turns it off).

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
            One row per pair: the ``source`` and ``target`` condition, ``n_source`` (cells
            predicted), ``n_target`` (real cells) and the ``ratio`` of their spreads. No rows
            (and ``spread_scale`` 1) when the training data have no such pair.
        """
        if self.adata is None:
            raise InputError("this model has no training data; load it with adata=...")
        for name, value in (("n_cells", n_cells), ("max_pairs", max_pairs)):
            if value < 1:
                raise InputError(f"{name} must be at least 1, got {value}")
        if min_cells < 2:
            raise InputError(f"min_cells must be at least 2, got {min_cells}")
        self.spread_scale = 1.0
        columns = ["source", "target", "n_source", "n_target", "ratio"]
        pairs = self._spread_pairs(self.adata.obs, min_cells)[:max_pairs]
        if not pairs:
            logger.info("rnadiff: no pair of measured conditions to calibrate the spread on")
            return pd.DataFrame(columns=columns)
        log = self.log_expression(self.adata)
        rng = np.random.default_rng(seed)
        drawn: dict[bytes, np.ndarray] = {}  # one sample per source group: encoded once
        rows = []
        for source, changes, target in tqdm(
            pairs, disable=not progress, desc="calibrating spread", leave=False
        ):
            key = source.tobytes()
            if key not in drawn:
                drawn[key] = np.sort(rng.choice(source, min(n_cells, len(source)), replace=False))
            idx = drawn[key]
            moved = self.predict(
                self.adata[idx],
                target=changes,
                steps=steps,
                seed=seed,
                batch_size=batch_size,
                spread=False,
                progress=False,
            ).X
            rows.append(
                {
                    "source": self._describe(self.adata.obs.iloc[source[0]], changes, own=True),
                    "target": self._describe(self.adata.obs.iloc[target[0]], changes),
                    "n_source": len(idx),
                    "n_target": len(target),
                    "ratio": spread_ratio(moved, log[target]),
                }
            )
        table = pd.DataFrame(rows, columns=columns)
        finite = table.ratio[np.isfinite(table.ratio)].to_numpy()
        if len(finite):
            self.spread_scale = float(np.clip(finite.mean(), *SPREAD_RANGE))
        summary = (finite.mean(), finite.min(), finite.max()) if len(finite) else (np.nan,) * 3
        logger.info(
            "rnadiff: spread calibration on %d pairs of conditions: ratio %.3f (%.3f-%.3f), "
            "counterfactual cells widened by %.3f",
            len(table),
            *summary,
            self.spread_scale,
        )
        return table

    def _describe(self, row: pd.Series, changes: Mapping[str, object], own: bool = False) -> str:
        """``key=value`` of a condition: ``row``'s covariates, with ``changes`` applied unless
        ``own``."""
        values = {k: row[k] for k in self.registry.keys if k in row.index}
        if not own:
            values |= dict(changes)
        return ", ".join(f"{k}={v}" for k, v in values.items())

    def _condition_columns(self, obs: pd.DataFrame) -> dict[str, np.ndarray]:
        """Each registered covariate that ``obs`` has: categorical values canonical
        (combination parts sorted; None: unset), continuous ones as floats (NaN: unset)."""
        out = {}
        for cov in self.registry.covariates:
            if cov.key not in obs:
                continue
            if cov.categorical:
                out[cov.key] = np.array([_canonical(cov, v) for v in obs[cov.key]], dtype=object)
            else:
                out[cov.key] = pd.to_numeric(obs[cov.key], errors="coerce").to_numpy(np.float64)
        return out

    def _condition_labels(self, obs: pd.DataFrame) -> np.ndarray:
        """Each row's full condition (:meth:`_condition_columns`) as one string; rows with a
        missing value get ``""``."""
        columns = self._condition_columns(obs)
        labels = _row_keys(list(columns.values()), len(obs))
        labels[~_complete(columns, len(obs))] = ""
        return labels

    def _spread_pairs(
        self, obs: pd.DataFrame, min_cells: int
    ) -> list[tuple[np.ndarray, dict, np.ndarray]]:
        """``(source rows, target changes, target rows)`` of the transports between measured
        conditions that :meth:`calibrate_spread` uses, those with the most target cells first:
        a context's control cells to each perturbation measured there (the target's
        continuous values with it), and neighbouring measured values of each continuous
        covariate with everything else equal (both ways)."""
        pkey, control = self.registry.perturbation_key, self.registry.control
        n = len(obs)
        columns = self._condition_columns(obs)
        ok = _complete(columns, n)
        labels = _row_keys(list(columns.values()), n)
        conts = {k: v for k, v in columns.items() if not self.registry[k].categorical}

        def key_without(*drop: str) -> np.ndarray:
            return _row_keys([v for k, v in columns.items() if k not in drop], n)

        out = []
        if pkey in columns and control is not None:
            context = key_without(pkey, *conts)
            is_ctrl = ok & (columns[pkey] == control)
            for label in sorted(set(labels[ok & ~is_ctrl])):
                target = np.flatnonzero(labels == label)
                first = target[0]
                source = np.flatnonzero(is_ctrl & (context == context[first]))
                changes = {pkey: columns[pkey][first]}
                changes |= {k: float(v[first]) for k, v in conts.items()}
                out.append((source, changes, target))
        for key, values in conts.items():
            rest = key_without(key)
            for group in sorted(set(rest[ok])):
                rows = ok & (rest == group)
                points = np.unique(values[rows])
                for a, b in itertools.pairwise(points):
                    for x, y in ((a, b), (b, a)):
                        source = np.flatnonzero(rows & (values == x))
                        target = np.flatnonzero(rows & (values == y))
                        out.append((source, {key: float(y)}, target))
        out = [p for p in out if len(p[0]) >= min_cells and len(p[2]) >= min_cells]
        return sorted(out, key=lambda p: -len(p[2]))  # stable: ties keep their order

    # -------------------------------------------------------------- generation
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

        Parameters
        ----------
        conditions
            One condition (``{"perturbation": "stim", "cell_type": "B cells"}``), a list of
            them or a DataFrame with one row per condition; covariates left out are
            unspecified (generated unconditionally in them). Combinations such as ``"A+B"``
            may be new, as long as each part is known.
        n_cells
            Cells per condition.
        sampler
            ``"dpmpp_2m"`` (DPM-Solver++(2M), one network call per step), ``"heun"`` or
            ``"euler"``. On Kang 2018 (held-out CD14+ monocytes) DPM-Solver++ with 20 steps
            scored as Heun with 32 steps (63 calls) at a third of the time.
        steps
            Noise levels of the sampler.
        guidance
            Classifier-free guidance: a joint scale (1: conditional) or ``{covariate: scale}``.
        transfer
            How a perturbation reaches a context (cell type, batch, ...) where it was never
            measured; cells whose combination of categorical covariates occurred in training
            always use the joint conditional, which shrinks unseen effects toward what that
            context showed in training. ``"compose"`` (default): the control in that context
            plus the perturbation's effect in the nearest context where it was measured (by
            the model's control profile of each context; its marginal over contexts when
            there is none), times ``transfer_scale`` (default 1.5;
            :func:`rnadiff.sampling.compositional_guidance`; see the README).
            ``"guide"``: classifier-free guidance on the perturbation with scale
            ``transfer_scale`` (default 3). ``"none"``: the joint conditional.
        transfer_scale
            Strength of the transfer; ``None``: the default of the chosen ``transfer``.
        prior
            Allow perturbations never seen in training whose target is one of the model's
            genes: each is represented by a mix of the seen perturbations of the genes whose
            expression co-varies most with it, blended with all seen perturbations by their
            cells as far as the trust in co-expression fitted on the seen ones says
            (``model.prior``; :mod:`rnadiff.conditioning._prior`), with the same mix of their
            calibrated effect scales; the mix is logged and stored in
            ``uns['rnadiff']['perturbation_prior']``.
        calibrated
            Scale the effect of each perturbation measured in the cell's context by the factor
            :meth:`calibrate_effects` found on the training cells (``effect_scales``; training
            runs it); ``False``: the network's own effect. The factors used are in
            ``uns['rnadiff']['effect_scales']``.
        seed
            Seed of the initial noise; the same seed gives the same cells.
        batch_size
            Cells per denoiser call.
        progress
            Show a progress bar.

        Returns
        -------
        AnnData
            ``X``: generated log-normalized expression of the model's genes; ``obs``: the
            condition of each cell and ``rnadiff_condition`` (its index in ``conditions``);
            ``uns['rnadiff']``: the sampling settings.

        Notes
        -----
        A continuous covariate (time, dose) asked for at a value between two values seen in
        training, but not at one of them, is interpolated: the denoiser is the linear mix of
        the denoiser at the two neighbouring training values (weights linear in the encoded
        value; :func:`rnadiff.sampling.interpolated_covariate`). The network's own embedding
        between a few measured time points or doses is not constrained by data; on the HSMM
        time course (48 h held out) the mix predicted the held-out means better. Values
        outside the training range are left to the network. ``uns['rnadiff']
        ['interpolated_cells']`` counts the cells per covariate.
        """
        frame = conditions_frame(conditions, self.registry)
        self._check_sampling(sampler, guidance)
        if n_cells < 1:
            raise InputError(f"n_cells must be at least 1, got {n_cells}")
        soft = self._prior_map(frame, use=True) if prior else None
        z, obs, mask = self._sample(
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
        return self._to_anndata(
            z,
            obs,
            {
                "method": "generate",
                "sampler": sampler,
                "steps": steps,
                "guidance": _jsonable(guidance),
                "transfer": transfer,
                "transferred_cells": int(mask.sum()),
                "transfer_scale": _transfer_scale(transfer, transfer_scale),
                "interpolated_cells": self._interpolated_cells(obs),
                "perturbation_prior": self._used_prior(soft),
                "effect_scales": self._effect_scales_used(obs, calibrated),
                "seed": seed,
            },
        )

    def _sample(
        self,
        frame: pd.DataFrame,
        n_cells: int,
        *,
        sampler,
        steps: int,
        guidance: Guidance,
        transfer: Transfer,
        transfer_scale: float | None,
        seed: int,
        batch_size: int,
        progress: bool,
        soft: dict | None = None,
        wrap=None,
        calibrated: bool = True,
    ) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
        """``n_cells`` per row of ``frame`` from seeded noise: (model-space cells, obs,
        transfer mask). ``generate`` and ``design`` share it, so the same seed starts both
        from the same noise."""
        obs = frame.loc[frame.index.repeat(n_cells)].reset_index(names="rnadiff_condition")
        cond = self._cond(obs, allow_missing=True, soft=soft)
        gen = torch.Generator().manual_seed(seed)
        sigmas = self._sigmas(steps)
        x = torch.randn(len(obs), len(self.preprocess.genes), generator=gen) * float(sigmas[0])
        plan = self._transfer_plan(obs, transfer, transfer_scale)
        z = self._run(
            sampler,
            x,
            sigmas,
            cond,
            guidance,
            gen,
            batch_size,
            progress,
            transfer=plan,
            wrap=wrap,
            obs=obs,
            calibrated=calibrated,
        )
        return z, obs, plan[0]

    def predict(
        self,
        source: ad.AnnData,
        *,
        perturbation: str | None = None,
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
            Shorthand for ``target={perturbation_key: perturbation}``.
        target
            Covariates to change, e.g. ``{"condition": "stim"}``; others keep the source's.
        method
            ``"counterfactual"``: encode each cell to noise with the probability-flow ODE
            under its own condition, decode under the target (the cell's identity is kept);
            ``"generate"``: sample new cells under each cell's target condition.
        sampler, steps, guidance, transfer, transfer_scale, prior, calibrated
            As in :meth:`generate`; ``guidance``, ``transfer`` and ``calibrated`` apply to
            decoding.
        spread
            Counterfactual only: widen the predicted cells of each target condition around
            their own mean by ``spread_scale``, the spread lost in transport as
            :meth:`calibrate_spread` measured it on the training cells
            (:func:`rnadiff.conditioning._calibration.widen`: values stay non-negative and
            every gene keeps its mean). The widening is relative to the cells predicted
            together: predict a population in one call, not cell by cell. False: the cells
            as decoded.
        seed, batch_size, progress
            As in :meth:`generate`.
        encode_sigma
            Counterfactual only: noise level the cells are encoded to (default ``sigma_max``,
            a full inversion); lower values keep more of the source cell. The model keeps the
            last encoding (up to 256 MB): predicting the same source cells under several
            targets encodes them once.

        Returns
        -------
        AnnData
            One predicted cell per source cell, same ``obs_names``; ``X``: predicted
            log-normalized expression; ``obs``: the source's covariates with the target
            applied and ``rnadiff_source_<key>`` for each changed covariate;
            ``uns['rnadiff']``: the settings.
        """
        changes = dict(target or {})
        if perturbation is not None:
            if self.registry.perturbation_key is None:
                raise InputError("the model has no perturbation covariate")
            changes[self.registry.perturbation_key] = perturbation
        if not changes:
            raise InputError("give a perturbation or a target to predict")
        for key in changes:
            self.registry[key]  # raises on unknown covariates
        if method not in ("counterfactual", "generate"):
            raise InputError(f"method must be 'counterfactual' or 'generate', got {method!r}")
        self._check_sampling(sampler, guidance)
        if encode_sigma is not None and not 0 < float(encode_sigma) < float("inf"):
            raise InputError(f"encode_sigma must be a positive number, got {encode_sigma}")
        obs_src = source.obs[[k for k in self.registry.keys if k in source.obs]].copy()
        cond_src = self._cond(obs_src)
        obs_tgt = obs_src.copy()
        for key, value in changes.items():
            if not self.registry[key].categorical:
                value = numeric_value(key, value)
            obs_tgt[f"rnadiff_source_{key}"] = obs_tgt[key]
            obs_tgt[key] = (
                pd.Categorical([value] * len(obs_tgt)) if isinstance(value, str) else value
            )
        soft = self._prior_map(obs_tgt, use=True) if prior else None
        cond_tgt = self._cond(obs_tgt, soft=soft)
        gen = torch.Generator().manual_seed(seed)
        sigma_max = float(encode_sigma or self.config.diffusion.sigma_max)
        sigmas = self._sigmas(steps, sigma_max=sigma_max)
        plan = self._transfer_plan(obs_tgt, transfer, transfer_scale)  # checks it before encoding
        if method == "counterfactual":
            z0 = torch.from_numpy(self._model_space(source))
            x = self._encode(z0, sigmas, cond_src, batch_size, progress, obs=obs_src)
        else:
            x = torch.randn(source.n_obs, len(self.preprocess.genes), generator=gen) * sigma_max
        mask = plan[0]
        z = self._run(
            sampler,
            x,
            sigmas,
            cond_tgt,
            guidance,
            gen,
            batch_size,
            progress,
            transfer=plan,
            obs=obs_tgt,
            calibrated=calibrated,
        )
        info = {
            "method": method,
            "sampler": sampler,
            "steps": steps,
            "seed": seed,
            "guidance": _jsonable(guidance),
            "transfer": transfer,
            "transferred_cells": int(mask.sum()),
            "transfer_scale": _transfer_scale(transfer, transfer_scale),
            "interpolated_cells": self._interpolated_cells(obs_tgt),
            "encode_sigma": sigma_max,
            "perturbation_prior": self._used_prior(soft),
            "effect_scales": self._effect_scales_used(obs_tgt, calibrated),
            "spread_scale": 1.0,
            "target": {k: str(v) for k, v in changes.items()},
        }
        out = self._to_anndata(z, obs_tgt, info)
        if spread and method == "counterfactual" and self.spread_scale != 1:
            # each target condition widened around its own mean
            out.X = widen(out.X, self._condition_labels(obs_tgt), self.spread_scale)
            out.uns["rnadiff"]["spread_scale"] = self.spread_scale
        out.obs_names = source.obs_names.copy()
        return out

    def denoise(
        self,
        adata: ad.AnnData,
        *,
        sigma: float | Literal["auto"] = "auto",
        layer: str | None = None,
        batch_size: int = 2048,
        progress: bool = True,
    ) -> ad.AnnData:
        """Denoise cells: the model's estimate of each clean profile (Tweedie's formula).

        Each cell, in the model's space (normalized, log1p, scaled genes), is taken as a clean
        profile plus Gaussian noise of level ``sigma``, and the denoiser returns its posterior
        mean ``E[x0 | x]`` under the model's learned distribution of the cell's condition
        (its registered covariates in ``obs``; covariates that are missing are left unset).
        It pulls each cell towards the cells the model was trained on, so it suits a model
        trained on deeper or cleaner cells of the same kind (a reference) applied to shallow
        ones; train such a model with ``TrainConfig(thinning=0.5)`` (count thinning teaches it
        what shallower copies of its cells look like). On Zeisel 2015 cortex cells thinned to
        25% / 10% / 5% of their counts, with a model trained that way on other, deep cells:
        per-cell Pearson with the deep truth 0.79 -> 0.85 / 0.63 -> 0.79 / 0.51 -> 0.76 with
        ``sigma="auto"`` (3 seeds; the README and ``benchmarks/denoise_zeisel.py``).

        Parameters
        ----------
        adata
            Cells with the model's genes: raw counts or log-normalized, as the training data
            (any depth; counts are normalized per cell); left unmodified.
        sigma
            Noise level the cells are taken to carry, in units of each gene's training
            standard deviation: small values change little, large ones return the
            condition's typical profile. ``"auto"`` (raw counts only): each cell's own
            counting noise beyond that of the training cells, from its total counts (the
            error of Poisson-sampled log-normalized values at the training cells' mean
            expression, :func:`rnadiff.diffusion._count_noise.technical_sigma`); cells as
            deep as the training cells' median are left almost as they are.
        layer
            Layer holding the expression instead of ``X`` (default: the training layer).
        batch_size
            Cells per denoiser call.
        progress
            Show a progress bar over batches.

        Returns
        -------
        AnnData
            One denoised cell per input cell, same ``obs_names`` and ``obs`` plus
            ``rnadiff_sigma`` (each cell's noise level); ``X``: log-normalized expression of
            the model's genes; ``uns['rnadiff']``: the settings.
        """
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        layer = self.setup.get("layer") if layer is None else layer
        z0 = self._model_space(adata, layer)
        sigmas = self._denoise_sigmas(adata, sigma, layer)
        obs = adata.obs[[k for k in self.registry.keys if k in adata.obs]].copy()
        cond = self._cond(obs, allow_missing=True)
        interpolation = self._interpolation(obs)
        x, s_all = torch.from_numpy(z0), torch.from_numpy(sigmas.astype(np.float32))
        out = []
        batches = self._batches(x.shape[0], batch_size)
        with torch.no_grad():
            for b in tqdm(batches, disable=not progress, desc="denoising", leave=False):
                c = {k: v[b] for k, v in cond.items()}
                out.append(self._core(interpolation, b)(x[b], s_all[b], c))
        z = torch.cat(out).numpy() if out else np.zeros((0, len(self.genes)), np.float32)
        info = {
            "method": "denoise",
            "sigma": sigma if sigma == "auto" else float(sigma),
            "sigma_median": float(np.median(sigmas)) if len(sigmas) else None,
            "layer": layer,
        }
        result = self._to_anndata(z, adata.obs, info)
        result.obs_names = adata.obs_names.copy()
        result.obs["rnadiff_sigma"] = sigmas
        return result

    def _thinning(self, fraction: float) -> CountThinning:
        """The count-thinning corruption of the training cells (``TrainConfig.thinning``)."""
        state = self.preprocess
        if state.input_type != "counts" or state.expr_mean is None:
            raise InputError("thinning needs raw counts (integers) as the training data")
        X = expression_matrix(self.adata, self.setup.get("layer"))
        sub = X[:, self.adata.var_names.get_indexer(list(state.genes))]
        return CountThinning(
            sub.toarray() if hasattr(sub, "toarray") else np.asarray(sub),
            total_counts(X),
            mean=state.mean,
            std=state.std,
            expr_mean=state.expr_mean,
            target_sum=state.target_sum,
            fraction=fraction,
        )

    def _denoise_sigmas(self, adata: ad.AnnData, sigma, layer: str | None) -> np.ndarray:
        """Each cell's noise level for :meth:`denoise`."""
        if isinstance(sigma, str):
            if sigma != "auto":
                raise InputError(f"sigma must be a positive number or 'auto', got {sigma!r}")
            state = self.preprocess
            if state.input_type != "counts":
                raise InputError(
                    "sigma='auto' needs a model trained on raw counts (it estimates counting "
                    "noise from each cell's total counts); give sigma as a number"
                )
            if state.expr_mean is None or state.depth is None:
                raise InputError(
                    "sigma='auto' needs the training cells' depth, which this model was saved "
                    "without (an older rnadiff); give sigma as a number, or retrain"
                )
            X = expression_matrix(adata, layer)
            if detect_input_type(X) != "counts":
                raise InputError(
                    "sigma='auto' needs raw counts (integers) for the cells to denoise; give "
                    "sigma as a number for other values"
                )
            depths = total_counts(X)
            sigmas = technical_sigma(
                depths,
                state.expr_mean,
                state.std,
                reference_depth=state.depth,
                target_sum=state.target_sum,
                floor=self.config.diffusion.sigma_min,
            )
            if len(depths) and np.median(depths) >= 0.8 * state.depth:
                logger.warning(
                    "rnadiff: these cells are about as deep as the training cells (median %.0f "
                    "vs %.0f counts), so sigma='auto' leaves most of them almost unchanged; "
                    "give sigma as a number to denoise them anyway",
                    np.median(depths),
                    state.depth,
                )
            return sigmas
        try:
            value = float(sigma)
        except (TypeError, ValueError):
            raise InputError(f"sigma must be a positive number or 'auto', got {sigma!r}") from None
        if not np.isfinite(value) or value <= 0:
            raise InputError(f"sigma must be a positive number or 'auto', got {sigma}")
        return np.full(adata.n_obs, value)

    # ------------------------------------------------------ design and ranking
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
        seed: int = 0,
        batch_size: int = 2048,
        progress: bool = True,
    ) -> ad.AnnData:
        """Generate cells that meet a phenotype, by gradient guidance of the sampler.

        Parameters
        ----------
        phenotype
            A :class:`rnadiff.design.Markers`, :class:`~rnadiff.design.Signature` or
            :class:`~rnadiff.design.CellState`, a weighted sum (``2 * markers + state``) or a
            list of terms (equal weights).
        conditions
            Covariates to condition on (classifier-free guidance applies), e.g.
            ``{"cell_type": "CD14+ Monocytes"}``; ``None``: unconditional.
        n_cells
            Cells per condition.
        scale
            Step of the gradient guidance: 1 moves each denoised estimate onto the
            specification (for one term), smaller values go part of the way, 0 is unguided.
        through_denoiser
            Differentiate the objective through the network with respect to the noisy sample
            (diffusion posterior sampling): slower, follows the data manifold more closely.
        guide_sigma_min
            Guide only at noise levels at or above this (the last steps then refine the cells
            without guidance).
        langevin_steps
            Langevin corrector steps after each sampler step (0: none); uses a
            DPM-Solver++(2M) predictor.
        snr
            Signal-to-noise ratio of the Langevin steps.
        guidance, transfer, transfer_scale, sampler, steps, seed, batch_size, progress
            As in :meth:`generate`.
        reference
            Reference cells for relative specifications (marker fold changes); default: cells
            generated without phenotype guidance under the same conditions and seed.
        realism_reference
            Real cells the realism score compares with; default: the model's training cells
            (when the model has them).

        Returns
        -------
        AnnData
            Designed cells (log-normalized). ``obs``: the conditions, ``objective`` (minus half
            the squared distance to the specification; 0 = met with margin),
            ``distance_to_spec`` (log units), ``meets_spec`` (every term's threshold met),
            ``meets_term<i>`` for combined specifications, and ``realism`` (distance to the
            nearest real cell over the median real-to-real nearest-neighbour distance, in a
            PCA space of real cells: about 1 for realistic cells). ``uns['rnadiff_design']``:
            success rate, median realism, and both for the unguided cells from the same noise.
        """
        from rnadiff.design._workflow import design

        return design(
            self,
            phenotype,
            conditions=conditions,
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
            reference=reference,
            realism_reference=realism_reference,
            seed=seed,
            batch_size=batch_size,
            progress=progress,
        )

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
        seed: int = 0,
        batch_size: int = 2048,
        progress: bool = True,
    ) -> pd.DataFrame:
        """Rank candidate perturbations by how well they would produce a target phenotype.

        Two scores, and a combined rank (mean of the two ranks; ties go to the generation
        score, which carries no Monte-Carlo noise between candidates):

        * ``phenotype_score`` (generation): cells under each candidate in the context, all
          decoded from one shared start, so that candidates differ only by their condition:
          the ``reference`` cells (up to ``n_cells``) encoded under the control
          (counterfactuals of the reference), or ``n_cells`` seeded noise vectors without a
          reference. For target cells, the cosine similarity of the candidate's predicted mean
          change (vs the control decoded from the same start; 0 for the control itself) and
          the target's change (vs the reference); for a phenotype specification, the mean
          objective (and ``success_rate``, the fraction of cells meeting it).
        * ``likelihood_score`` (diffusion classifier): the target cells' conditional
          denoising error, averaged over noise levels log-uniform in ``noise_range``, under
          the control minus under the candidate (higher: the candidate explains the cells
          better). For a specification, the target cells are designed ones that meet it.
          ``vote_share``: fraction of target cells whose lowest error is this candidate.

        On Papalexi 2021 held-out knock-outs (3 seeds, ``make bench``) the combined rank puts
        the true knock-out first more often than either score alone and than the nearest
        training pseudobulk (README).

        Parameters
        ----------
        target
            Target cells (AnnData with the model's genes; their registered covariates other
            than the perturbation are used as their context), or a phenotype specification.
        candidates
            Perturbations to rank; default: every perturbation the model knows (and the
            control).
        context
            Other covariates for every candidate, e.g. ``{"cell_type": "B cells"}``.
        pairs
            Also rank every pair ``A+B`` of the (non-control) candidates.
        reference
            Real reference cells (e.g. controls in the context): the target's change is taken
            from them, marker thresholds refer to them, and the generation score decodes them
            under each candidate; default: generated control cells.
        n_cells
            Cells per candidate for the generation score (reference cells: a seeded subset
            beyond this); for a specification also the number of designed cells.
        max_target_cells
            Target cells scored (a seeded subset beyond this).
        n_noise_levels, n_draws
            Noise levels and noise draws per level of the likelihood score.
        noise_range
            Lowest and highest noise level of the likelihood score, in units of
            ``sigma_data``. At low noise the cell itself determines its reconstruction and the
            condition hardly matters; on Papalexi 2021 (benchmark seed 0) levels 0.75-3 ranked
            the true knock-out first for 40% of targets, levels spread like the training noise
            (mostly below 0.5) for 28%.
        steps
            Sampler steps for generation.
        design_scale
            Guidance step of the designed cells (specification targets).
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
        from rnadiff.design._workflow import rank_perturbations

        return rank_perturbations(
            self,
            target,
            candidates=candidates,
            context=context,
            pairs=pairs,
            reference=reference,
            n_cells=n_cells,
            max_target_cells=max_target_cells,
            n_noise_levels=n_noise_levels,
            n_draws=n_draws,
            noise_range=noise_range,
            steps=steps,
            design_scale=design_scale,
            seed=seed,
            batch_size=batch_size,
            progress=progress,
        )

    def log_expression(self, adata: ad.AnnData) -> np.ndarray:
        """Log-normalized expression of the model's genes for ``adata`` (cells x genes).

        Raw counts or log-normalized cells are normalized as the training cells were; cells
        rnadiff generated (``uns['rnadiff']``) are taken as they are.
        """
        check_genes(adata.var_names, self.preprocess.genes, what="the data")
        if "rnadiff" in adata.uns:
            x = adata[:, self.genes].X
            return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32)
        layer = self.setup.get("layer")
        return log_expression(
            adata, self.preprocess, layer=layer if layer in adata.layers else None
        )

    # ----------------------------------------------------------------- helpers
    def _model_space(self, adata: ad.AnnData, layer: str | None = None) -> np.ndarray:
        """Cells in the model's space, from ``layer`` (default: the training layer)."""
        layer = self.setup.get("layer") if layer is None else layer
        return scale(log_expression(adata, self.preprocess, layer=layer), self.preprocess)

    def _cond(
        self, obs: pd.DataFrame, *, allow_missing: bool = False, soft: dict | None = None
    ) -> dict[str, torch.Tensor]:
        """Condition tensors; ``soft``: the expression prior of unseen perturbations
        (:meth:`_prior_map`); without it, an unseen perturbation is an error."""
        if soft is None:
            self._prior_map(obs, use=False)  # names the prior when it would help
        return {
            k: torch.from_numpy(v)
            for k, v in self.registry.encode(obs, allow_missing=allow_missing, soft=soft).items()
        }

    def _context_and_perturbation(self, obs: pd.DataFrame) -> list[tuple[tuple, str | None]]:
        """Each cell's ``(context, perturbation)``: its categorical condition split into the
        perturbation and everything else (see :meth:`_condition_rows`)."""
        cats = [c.key for c in self.registry.covariates if c.categorical]
        ip = cats.index(self.registry.perturbation_key)
        return [(context_of(r, ip), r[ip]) for r in self._condition_rows(obs)]

    def _fit_prior(self, adata: ad.AnnData, chunk: int = 8192) -> dict | None:
        """Fit the expression prior's trust in co-expression on the seen perturbations.

        Each single perturbation's measured effect (log expression, mean change from the
        control in each context where both were measured, averaged over those contexts by its
        cells) and its number of cells; :func:`rnadiff.conditioning._prior.fit_trust` then
        leaves each one out in turn. ``None`` without a perturbation column.
        """
        pkey, control = self.registry.perturbation_key, self.registry.control
        if pkey is None or control is None or pkey not in adata.obs:
            return None
        cov = self.registry[pkey]
        labels = self._context_and_perturbation(adata.obs)
        codes, groups = pd.factorize(pd.Series(labels, dtype=object))
        counts = np.bincount(codes, minlength=len(groups))
        member = sp.csr_matrix(
            (np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(len(groups), len(codes))
        )
        sums = np.zeros((len(groups), len(self.preprocess.genes)))
        for start in range(0, adata.n_obs, chunk):  # dense log expression, a chunk at a time
            rows = slice(start, start + chunk)
            sums += member[:, rows] @ self.log_expression(adata[rows]).astype(np.float64)
        means = {g: sums[i] / counts[i] for i, g in enumerate(groups)}
        n = dict(zip(groups, counts, strict=True))
        effects, shares = {}, {}
        for (ctx, p), m in means.items():
            single = p not in (None, control) and len(cov.parts(p)) == 1
            if not single or None in ctx or (ctx, control) not in means:
                continue
            effects[p] = effects.get(p, 0) + n[(ctx, p)] * (m - means[(ctx, control)])
            shares[p] = shares.get(p, 0) + int(n[(ctx, p)])
        effects = {p: v / shares[p] for p, v in effects.items()}
        trust, errors = (None, np.zeros(0))
        if self.gene_vectors is not None and len(effects) > 1:
            trust, errors = fit_trust(effects, shares, self.preprocess.genes, self.gene_vectors)
        if trust is not None:
            logger.info(
                "rnadiff: expression prior: trust in co-expression %.1f (leave-one-out error "
                "%.4g at trust 0, %.4g at 1)",
                trust,
                errors[0],
                errors[-1],
            )
        return {
            "trust": trust,
            "shares": shares,
            "grid": list(TRUST_GRID) if trust is not None else [],
            "loo_error": [float(e) for e in errors],
        }

    def _gene_vectors(self, adata: ad.AnnData, seed: int, max_cells: int = 5000) -> np.ndarray:
        if adata.n_obs > max_cells:  # the same cells as subsampling after the transform
            rng = np.random.default_rng(seed)
            adata = adata[np.sort(rng.choice(adata.n_obs, max_cells, replace=False))]
        return gene_vectors(self._model_space(adata))

    def _prior_map(self, obs: pd.DataFrame, *, use: bool) -> dict | None:
        """Soft encodings of perturbations never seen in training that are the model's genes."""
        pkey = self.registry.perturbation_key
        if pkey is None or pkey not in obs:
            return None
        cov = self.registry[pkey]
        values = obs[pkey].dropna().astype(str).unique()
        unseen = sorted({p for v in values for p in cov.parts(v)} - set(cov.tokens))
        if not unseen:
            return None
        genes = set(self.preprocess.genes)
        if not use:
            as_genes = [p for p in unseen if p in genes]
            if as_genes:
                raise InputError(
                    f"unknown perturbation {as_genes[0]!r} in column {pkey!r}: never seen in "
                    "training, but it is one of the model's genes; pass prior=True "
                    "(--gene-prior) to predict it from the perturbations of the seen genes "
                    "whose expression co-varies with it"
                )
            return None  # the registry names the unknown value
        if self.gene_vectors is None:
            raise InputError("this model has no gene expression prior (saved by an older version)")
        mixes = {}
        for p in unseen:
            if p not in genes:
                raise InputError(
                    f"no prior for perturbation {p!r}: it was never seen in training and is not "
                    "one of the model's genes, so its expression cannot stand in for it"
                )
            weights = self._prior_weights(p)
            if not weights:
                raise InputError(
                    f"no prior for perturbation {p!r}: no seen perturbation targets a model gene"
                )
            mixes[p] = weights
            logger.info(
                "rnadiff: %r was never seen in training; expression prior: %s",
                p,
                " + ".join(f"{w:.2f} x {t}" for t, w in list(weights.items())[:5])
                + (f" + {len(weights) - 5} more" if len(weights) > 5 else ""),
            )
        return {pkey: mixes}

    def _prior_weights(self, gene: str) -> dict[str, float]:
        """The seen perturbation tokens standing in for the unseen ``gene`` (empty: none)."""
        if self.gene_vectors is None:
            return {}
        cov = self.registry[self.registry.perturbation_key]
        candidates = {t: t for t in cov.tokens if t != self.registry.control}
        weights = expression_prior(gene, candidates, self.preprocess.genes, self.gene_vectors)
        trust = (self.prior or {}).get("trust")
        if weights and trust is not None:
            weights = blend_prior(weights, self.prior["shares"], trust)
        return weights

    def _used_prior(self, soft: dict | None) -> dict[str, dict[str, float]]:
        return dict((soft or {}).get(self.registry.perturbation_key, {}))

    def _sigmas(self, steps: int, *, sigma_max: float | None = None) -> torch.Tensor:
        d = self.config.diffusion
        if steps < 1:
            raise InputError(f"steps must be at least 1, got {steps}")
        return karras_sigmas(
            steps, sigma_min=d.sigma_min, sigma_max=sigma_max or d.sigma_max, rho=d.rho
        )

    def _check_sampling(self, sampler: str, guidance: Guidance) -> None:
        if sampler not in SAMPLERS:
            raise InputError(f"unknown sampler {sampler!r}; choose from {sorted(SAMPLERS)}")
        if isinstance(guidance, Mapping):
            for key in guidance:
                self.registry[key]  # raises on unknown covariates
        weights = guidance.values() if isinstance(guidance, Mapping) else [guidance]
        for w in weights:
            try:
                finite = bool(np.isfinite(float(w)))
            except (TypeError, ValueError):
                finite = False
            if not finite:
                raise InputError(f"guidance weights must be finite numbers, got {w!r}")

    @staticmethod
    def _batches(n: int, batch_size: int):
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]

    def _run(
        self,
        sampler,
        x,
        sigmas,
        cond,
        guidance,
        gen,
        batch_size,
        progress,
        *,
        transfer,
        wrap=None,
        obs: pd.DataFrame | None = None,
        calibrated: bool = True,
    ):
        """Sample in batches; ``sampler`` is a name of ``SAMPLERS`` or a sampler function, and
        ``wrap`` an optional outermost denoiser wrapper (e.g. gradient guidance). ``obs``: the
        cells' covariates, from which ``"compose"`` transfer finds the measured contexts and
        unmeasured continuous values are interpolated (:meth:`_interpolation`)."""
        fn = SAMPLERS[sampler] if isinstance(sampler, str) else sampler
        for_batch = self._batch_denoisers(obs, transfer, guidance, calibrated=calibrated)
        out = []
        batches = self._batches(x.shape[0], batch_size)
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
                    generator=gen,
                    progress=progress and len(batches) == 1,
                )
            )
        return torch.cat(out).numpy()

    def _batch_denoisers(
        self,
        obs: pd.DataFrame | None,
        transfer,
        guidance: Guidance = 1.0,
        *,
        calibrated: bool = True,
    ):
        """``b -> denoiser`` for the cells in slice ``b`` of ``obs``: the EMA network,
        interpolated between measured continuous values (:meth:`_interpolation`), with
        classifier-free ``guidance``, the calibrated effect scale of each cell's perturbation
        (``calibrated``; :meth:`calibrate_effects`) and the transfer ``(mask, mode, scale)`` of
        the cells (``"compose"`` takes the effect from the nearest measured context)."""
        mask, mode, scale_ = transfer
        effect = self._cell_effect_scales(obs) if calibrated else None
        contexts, context_w = (
            self._transfer_contexts(mask, self._condition_rows(obs))
            if mode == "compose" and mask.any() and obs is not None
            else (None, None)
        )
        interpolation = self._interpolation(obs)
        composing = mode == "compose" and mask.any()
        control = self._control_row() if composing or effect is not None else None

        def for_batch(b: slice):
            denoiser = classifier_free_guidance(self._core(interpolation, b), guidance)
            if effect is not None and (effect[b] != 1).any():
                denoiser = effect_scaling(
                    denoiser,
                    key=self.registry.perturbation_key,
                    reference=control,
                    scale=torch.from_numpy(effect[b]),
                )
            where = torch.from_numpy(mask[b])
            if mode == "guide" and where.any():
                weights = torch.where(where, torch.tensor(float(scale_)), torch.tensor(1.0))
                return classifier_free_guidance(denoiser, {self.registry.perturbation_key: weights})
            if mode == "compose" and where.any():
                return compositional_guidance(
                    denoiser,
                    key=self.registry.perturbation_key,
                    reference=control,
                    scale=scale_,
                    where=where,
                    contexts=contexts,
                    context_weights=None if context_w is None else torch.from_numpy(context_w[b]),
                )
            return denoiser

        return for_batch

    def _cell_effect_scales(self, obs: pd.DataFrame | None) -> np.ndarray | None:
        """Each cell's calibrated effect scale, or None when no cell has one. 1 (none) for
        any cell whose perturbation was never measured in its context, whether it is
        transferred or not (``transfer="none"``); a perturbation never seen at all, predicted
        from its expression prior, gets the prior's mix of its tokens' scales."""
        pkey = self.registry.perturbation_key
        if not self.effect_scales or obs is None or pkey not in obs:
            return None
        cov = self.registry[pkey]
        values = [_canonical(cov, v) for v in obs[pkey]]
        scales = {v: self.effect_scales.get(v, 1.0) for v in set(values) if v is not None}
        # a perturbation never seen, predicted from its prior (a mix of seen tokens): the same
        # mix of their scales, whatever the context
        unseen = [v for v in scales if len(cov.parts(v)) == 1 and v not in cov.tokens]
        for v in unseen:
            weights = self._prior_weights(v)
            scales[v] = sum(w * self.effect_scales.get(t, 1.0) for t, w in weights.items()) or 1.0
        out = np.array([scales.get(v, 1.0) for v in values])
        prior = pd.Series(values).isin(unseen).to_numpy()
        transferred = self._transfer_mask(obs, "compose") & ~prior
        out[transferred] = 1.0  # never measured there
        return out if (out != 1).any() else None

    def _effect_scales_used(self, obs: pd.DataFrame, calibrated: bool) -> dict:
        """``{perturbation: scale}`` of the calibrated cells, for ``uns['rnadiff']``."""
        scales = self._cell_effect_scales(obs) if calibrated else None
        if scales is None:
            return {}
        values = obs[self.registry.perturbation_key].astype(str).to_numpy()
        return {str(v): float(s) for v, s in zip(values, scales, strict=True) if s != 1}

    def _condition_rows(self, obs: pd.DataFrame) -> list[tuple]:
        """Each row's categorical condition as a tuple (combination parts sorted; None: unset)."""
        cats = [c for c in self.registry.covariates if c.categorical]
        if not cats or any(c.key not in obs for c in cats):
            return [()] * len(obs)

        columns = [[_canonical(c, v) for v in obs[c.key]] for c in cats]
        return list(zip(*columns, strict=True))

    def _condition_keys(self, obs: pd.DataFrame) -> set[tuple]:
        return set(self._condition_rows(obs)) - {()}

    def _transfer_mask(self, obs: pd.DataFrame, transfer: Transfer) -> np.ndarray:
        """Cells with a perturbation in a context (all other categorical covariates given)
        whose combination never occurred in training."""
        if transfer not in ("guide", "compose", "none"):
            raise InputError(f"transfer must be 'guide', 'compose' or 'none', got {transfer!r}")
        n = len(obs)
        pkey, control = self.registry.perturbation_key, self.registry.control
        others = [c.key for c in self.registry.covariates if c.categorical and c.key != pkey]
        if transfer == "none" or control is None or pkey not in obs or not others:
            return np.zeros(n, dtype=bool)
        has_effect = (obs[pkey].notna() & (obs[pkey].astype(str) != control)).to_numpy()
        in_context = obs.reindex(columns=others).notna().all(axis=1).to_numpy()
        unseen = np.array([row not in self.seen for row in self._condition_rows(obs)])
        return has_effect & in_context & unseen

    def _transfer_plan(
        self, obs: pd.DataFrame, transfer: Transfer, scale: float | None = None
    ) -> tuple[np.ndarray, str, float | None]:
        """``(mask, mode, scale)`` for :meth:`_batch_denoisers`: the cells ``transfer`` applies
        to (:meth:`_transfer_mask`) and its scale (``None``: the mode's default)."""
        return self._transfer_mask(obs, transfer), transfer, _transfer_scale(transfer, scale)

    def _measured_values(self, obs: pd.DataFrame, max_values: int = 1000) -> dict:
        """The distinct training values of each continuous covariate (a covariate with more
        than ``max_values`` of them is densely measured and left out)."""
        out = {}
        for cov in self.registry.covariates:
            if cov.categorical or cov.key not in obs.columns:
                continue
            values = np.unique(pd.to_numeric(obs[cov.key], errors="coerce").dropna())
            if 2 <= len(values) <= max_values:
                out[cov.key] = [float(v) for v in values]
        return out

    def _transfer_contexts(
        self, mask: np.ndarray, rows: list[tuple]
    ) -> tuple[dict[str, torch.Tensor] | None, np.ndarray | None]:
        """Where ``"compose"`` takes each transferred cell's perturbation effect from: the
        measured context (values of the other categorical covariates, with both that
        perturbation and the control in training) nearest to the cell's own context, by the
        model's mean control profile of each context (the denoised estimate from pure noise);
        ties share the weight. Returns (condition rows of the contexts, weights ``(n_cells,
        n_contexts)``), or (None, None) when no cell has such a context (the composition then
        uses the marginal effect)."""
        pkey, control = self.registry.perturbation_key, self.registry.control
        cats = [c.key for c in self.registry.covariates if c.categorical]
        ip = cats.index(pkey)
        others = cats[:ip] + cats[ip + 1 :]
        contexts, measured = measured_contexts(self.seen, ip, control)
        cells = [i for i in np.flatnonzero(mask) if None not in context_of(rows[i], ip)]
        if not contexts or not cells:
            return None, None
        own = sorted({context_of(rows[i], ip) for i in cells} - set(contexts))
        everyone = contexts + own
        frame = pd.DataFrame(everyone, columns=others).assign(**{pkey: control})
        n = len(everyone)
        with torch.no_grad():  # the model's mean control profile of each context
            profiles = self.ema(
                torch.zeros(n, len(self.genes)),
                torch.full((n,), float(self.config.diffusion.sigma_max)),
                self._cond(frame, allow_missing=True),
            ).numpy()
        profile = dict(zip(everyone, profiles, strict=True))
        weights = nearest_context_weights(rows, cells, ip, contexts, measured, profile)
        if not weights.any():
            return None, None
        encoded = self.registry.encode(pd.DataFrame(contexts, columns=others), allow_missing=True)
        return {k: torch.from_numpy(encoded[k]) for k in others}, weights

    def _control_row(self) -> torch.Tensor:
        frame = pd.DataFrame({self.registry.perturbation_key: [self.registry.control]})
        return torch.from_numpy(
            self.registry.encode(frame, allow_missing=True)[self.registry.perturbation_key]
        )

    def _encode(self, z0, sigmas, cond, batch_size, progress, obs=None):
        """The cells ``z0`` encoded to noise level ``sigmas[0]`` (probability-flow ODE).

        The last encoding is kept: predicting the same source cells under many targets (e.g.
        every knock-out from one set of control cells) encodes them once. It is reused only
        for the same cells, noise levels, conditions, interpolation, batch size and weights
        (and only up to 2**26 values, 256 MB).
        """
        interpolation = self._interpolation(obs)
        digest = hashlib.blake2b(digest_size=20)
        for t in [z0, sigmas, *cond.values(), *self.ema.state_dict().values()]:
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
        for b in self._batches(z0.shape[0], batch_size):
            c = {k: v[b] for k, v in cond.items()}
            core = self._core(interpolation, b)
            out.append(encode(core, z0[b], sigmas, cond=c, progress=progress))
        x = torch.cat(out)
        # kept up to 256 MB; a larger source is encoded again each time
        self._last_encoding = (key, x.clone()) if x.numel() <= KEEP_ENCODING_MAX else None
        return x

    def _core(self, interpolation: dict, b: slice):
        """The EMA denoiser, interpolated between measured continuous values where asked."""
        core = self.ema
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

    def _interpolated_cells(self, obs: pd.DataFrame) -> dict[str, int]:
        return {k: int(v[3].sum()) for k, v in self._interpolation(obs).items()}

    def _interpolation(self, obs: pd.DataFrame | None) -> dict[str, tuple[np.ndarray, ...]]:
        """For each continuous covariate with values strictly between measured ones that were
        not measured themselves: ``{key: (low, high, weight, where)}``, the encoded
        neighbouring measured values, the weight of ``high`` (linear in the encoded value) and
        the cells concerned. Values outside the measured range are left to the network."""
        out = {}
        if obs is None:
            return out
        for key, values in self.measured.items():
            if key not in obs.columns or len(values) < 2:
                continue
            raw = pd.to_numeric(obs[key], errors="coerce").to_numpy(dtype=float)
            lo, hi, where = interpolation_neighbours(raw, values)
            if not where.any():
                continue
            frame = pd.DataFrame({key: np.concatenate([raw, lo, hi])})
            enc = self.registry.encode(frame, allow_missing=True)[key].reshape(3, -1)
            e_val, e_lo, e_hi = enc.astype(np.float64)
            weight = np.where(where, (e_val - e_lo) / np.where(where, e_hi - e_lo, 1.0), 0.0)
            out[key] = (
                e_lo.astype(np.float32),
                e_hi.astype(np.float32),
                weight.astype(np.float32),
                where,
            )
        return out

    def _to_anndata(self, z: np.ndarray, obs: pd.DataFrame, info: dict) -> ad.AnnData:
        obs = obs.copy()
        obs.index = obs.index.astype(str)
        for col in obs.columns:
            if obs[col].dtype == object:
                obs[col] = obs[col].astype("category")
        var = pd.DataFrame(index=pd.Index(self.preprocess.genes, name=None))
        out = ad.AnnData(X=unscale(z, self.preprocess), obs=obs, var=var)
        out.uns["rnadiff"] = {
            **info,
            "rnadiff_version": __version__,
            "input": self.preprocess.description,
        }
        return out

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
        meta = {
            "rnadiff_version": __version__,
            "model_config": self.config.to_dict(),
            "train_config": self.train_config.to_dict() if self.train_config else None,
            "setup": self.setup,
            "registry": self.registry.to_dict(),
            "preprocess": self.preprocess.to_json(),
            "step": self.step,
            "history": self.history,
            "seen_conditions": sorted(list(row) for row in self.seen),
            "measured_values": self.measured,
            "effect_scales": self.effect_scales,
            "spread_scale": self.spread_scale,
            "prior": self.prior,
        }
        weights = {f"model.{k}": v for k, v in self.denoiser.state_dict().items()}
        weights |= {f"ema.{k}": v for k, v in self.ema.state_dict().items()}
        weights["preprocess.mean"] = torch.from_numpy(self.preprocess.mean)
        weights["preprocess.std"] = torch.from_numpy(self.preprocess.std)
        if self.preprocess.expr_mean is not None:
            weights["preprocess.expr_mean"] = torch.from_numpy(self.preprocess.expr_mean)
        if self.gene_vectors is not None:
            weights["prior.gene_vectors"] = torch.from_numpy(self.gene_vectors)
        tensors = {"weights": weights}
        if self._trainer_state is not None:
            meta["trainer"], tensors["trainer"] = self._trainer_state
        save_checkpoint(path, meta, tensors)

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
        meta, tensors = load_checkpoint(path)
        weights = tensors["weights"]
        state = PreprocessState.from_json(
            meta["preprocess"],
            weights["preprocess.mean"].numpy(),
            weights["preprocess.std"].numpy(),
            weights["preprocess.expr_mean"].numpy() if "preprocess.expr_mean" in weights else None,
        )
        model = cls.__new__(cls)
        model._init(
            ModelConfig.from_dict(meta["model_config"]),
            meta["setup"],
            CovariateRegistry.from_dict(meta["registry"]),
            state,
        )
        model.denoiser.load_state_dict(
            {k[6:]: v for k, v in weights.items() if k.startswith("model.")}
        )
        model.ema.load_state_dict({k[4:]: v for k, v in weights.items() if k.startswith("ema.")})
        model.denoiser.eval()
        model.step, model.history = meta["step"], meta["history"]
        model.seen = {tuple(row) for row in meta.get("seen_conditions", [])}
        model.measured = {k: list(v) for k, v in meta.get("measured_values", {}).items()}
        model.effect_scales = {k: float(v) for k, v in meta.get("effect_scales", {}).items()}
        model.spread_scale = float(meta.get("spread_scale", 1.0))  # older checkpoints: none
        if "prior.gene_vectors" in weights:
            model.gene_vectors = weights["prior.gene_vectors"].numpy()
        model.prior = meta.get("prior")  # None in older checkpoints: co-expression alone
        if meta.get("train_config"):
            # checkpoints from before max_epochs trained without a cap, and those from before
            # epochs trained exactly max_steps steps
            old = {"max_epochs": None, "epochs": None}
            model.train_config = TrainConfig(**{**old, **meta["train_config"]})
        if "trainer" in tensors:
            model._trainer_state = (meta["trainer"], tensors["trainer"])
        if adata is not None:
            check_genes(adata.var_names, state.genes, what="adata")
            model.registry.encode(adata.obs)  # same covariate columns, known values
            model.adata = adata
        return model


def _row_keys(columns: list[np.ndarray], n: int) -> np.ndarray:
    """One string per row joining its values in ``columns`` (strings as they are, other
    values by ``repr``); all ``""`` without columns."""
    if not columns:
        return np.full(n, "", dtype=object)
    rows = zip(*columns, strict=True)
    keys = ["\x1f".join(v if isinstance(v, str) else repr(v) for v in r) for r in rows]
    return np.array(keys, dtype=object)


def _complete(columns: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Rows with a value in every column (not None, not NaN)."""
    ok = np.ones(n, dtype=bool)
    for values in columns.values():
        ok &= pd.notna(values)
    return ok


def _canonical(cov, value) -> str | None:
    """A categorical value as the model keys it: combination parts sorted (None: unset)."""
    return "+".join(sorted(cov.parts(value))) if pd.notna(value) else None


def _transfer_scale(transfer: Transfer, scale: float | None) -> float | None:
    if scale is not None and not 0 <= float(scale) < float("inf"):
        raise InputError(f"transfer_scale must be a finite number >= 0, got {scale}")
    return TRANSFER_SCALES.get(transfer) if scale is None else float(scale)


def _plain(value):
    """JSON-friendly copy of a setup read back from ``.uns`` (arrays -> lists)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray | list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _jsonable(guidance: Guidance):
    return dict(guidance) if isinstance(guidance, Mapping) else float(guidance)
