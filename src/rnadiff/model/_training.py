"""Training orchestration: the run's configuration and length, checkpoints, calibration."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import TYPE_CHECKING

from rnadiff._config import TrainConfig
from rnadiff._errors import InputError
from rnadiff.data._loader import CellMatrix, ConditionTable
from rnadiff.model._data import source_for
from rnadiff.training import Trainer
from rnadiff.training._distributed import is_main, shared, world_size
from rnadiff.training._loop import resolve_device
from rnadiff.training._thinning import CountThinning

if TYPE_CHECKING:
    from rnadiff.model._model import RNADiffusion

logger = logging.getLogger("rnadiff")


def run_config(model: RNADiffusion, config: TrainConfig | None, **overrides) -> TrainConfig:
    """The run's configuration: ``config``, else the previous run's (a resumed run keeps its
    settings), else the defaults, with the ``overrides`` that are given (not None).

    The length rule: ``max_steps`` alone trains exactly that many steps; with ``epochs`` or
    ``min_steps`` the length follows the data (``epochs`` passes, between ``min_steps`` and
    ``max_steps``; an explicit ``max_steps`` is a hard cap, the default one gives way to
    ``min_epochs`` passes on large data); ``max_epochs=0`` lifts the cap on passes over the
    cells.
    """
    base = config or model.train_config or TrainConfig()
    given = {k: v for k, v in overrides.items() if v is not None}
    if given.get("max_epochs", 0) < 0:
        raise InputError(f"max_epochs must be >= 0 (0: no cap), got {given['max_epochs']}")
    follows_data = "epochs" in given or "min_steps" in given
    if "max_steps" in given and not follows_data:  # an explicit length: exactly that many
        given["epochs"] = None
    elif "max_steps" in given:  # an explicit cap stays a cap: no floor of passes past it
        given["min_epochs"] = None
    elif follows_data and base.epochs is None and "epochs" not in given:
        given["epochs"] = TrainConfig().epochs
    if given.get("max_epochs") == 0:
        given["max_epochs"] = None
    return TrainConfig(**{**base.to_dict(), **given})


def train(
    model: RNADiffusion,
    cfg: TrainConfig,
    *,
    checkpoint_dir: str | os.PathLike | None,
    progress: bool,
    device: str = "auto",
    compile: bool = False,
) -> None:
    """Train the model's denoiser with ``cfg`` (see :meth:`rnadiff.RNADiffusion.train`): the
    cells are read a minibatch at a time (:class:`rnadiff.data.CellMatrix`), never densified
    whole."""
    data = CellMatrix.of(model.adata, model.preprocess, source_for(model, model.adata, None))
    cond = ConditionTable(model.registry, model.adata.obs)
    n = len(data)
    # the minibatch that follows the data is fixed for the run (and stored: a resumed run keeps it)
    cfg = dataclasses.replace(cfg, batch_size=cfg.batch_for(n))
    # and so is the precision (auto: bf16 for large batches on a CPU with native bf16)
    precision = cfg.precision_for(cfg.batch_size, resolve_device(device).type)
    cfg = dataclasses.replace(cfg, precision=precision)
    steps = cfg.steps_for(n)
    uncapped = dataclasses.replace(cfg, max_epochs=None).steps_for(n)
    if steps < uncapped:
        logger.info(
            "rnadiff: training stops at %d of %d steps: max_epochs=%g passes over %d "
            "cells (small data sets memorize their cells with many passes; "
            "max_epochs=None trains all steps)",
            steps,
            uncapped,
            cfg.max_epochs,
            n,
        )
    if is_main() and model.step < steps:  # the run's plan, once (rank 0 under torchrun)
        logger.info(
            "rnadiff: training %d steps of %d cells (%.3g passes over %d cells)%s%s",
            steps,
            cfg.batch_size,
            steps * min(cfg.batch_size, n) / n,
            n,
            ", bf16 autocast" if cfg.precision == "bf16" else "",
            f", from step {model.step}" if model.step else "",
        )
    trainer = Trainer(
        model.denoiser,
        config=dataclasses.replace(cfg, max_steps=steps),
        diffusion=model.config.diffusion,
        p_drop=model.config.p_drop,
        ema=model.ema,
        device=device,
        compile=compile,
    )
    if model._trainer_state is not None:
        trainer.load_state(*model._trainer_state)
    model.train_config = cfg

    def checkpoint(t: Trainer) -> None:
        model.step, model.history = t.step, t.history
        model._trainer_state = t.state_tensors()
        model.save(checkpoint_dir)

    trainer.fit(
        data,
        cond,
        on_checkpoint=checkpoint if checkpoint_dir else None,
        progress=progress,
        corrupt=thinning(model, data, cfg.thinning) if cfg.thinning else None,
    )
    model.step, model.history = trainer.step, trainer.history
    model._trainer_state = trainer.state_tensors()
    model.world_size = world_size()  # the run's processes (its global batch is cfg.batch_size)

    def calibrate():  # once (rank 0 under torchrun), for every process
        if cfg.calibration_cells:
            model.calibrate_effects(n_cells=cfg.calibration_cells, seed=cfg.seed, progress=progress)
        if cfg.spread_cells:
            model.calibrate_spread(n_cells=cfg.spread_cells, seed=cfg.seed, progress=progress)
        if cfg.anchor_cells:  # after the effect scales: it measures the calibrated predictions
            model.calibrate_means(n_cells=cfg.anchor_cells, seed=cfg.seed, progress=progress)
        else:  # anchors measured on the network before this run would not fit it
            model.anchors = None
        return model.effect_scales, model.spread_scale, model.anchors

    model.effect_scales, model.spread_scale, model.anchors = shared(calibrate)
    if checkpoint_dir and (cfg.calibration_cells or cfg.spread_cells or cfg.anchor_cells):
        model.save(checkpoint_dir)


def thinning(model: RNADiffusion, data: CellMatrix, fraction: float) -> CountThinning:
    """The count-thinning corruption of the training cells (``TrainConfig.thinning``)."""
    state = model.preprocess
    if state.input_type != "counts" or state.expr_mean is None:
        raise InputError("thinning needs raw counts (integers) as the training data")
    return CountThinning(
        data.counts,
        data.totals,
        mean=state.mean,
        std=state.std,
        expr_mean=state.expr_mean,
        target_sum=state.target_sum,
        fraction=fraction,
    )
