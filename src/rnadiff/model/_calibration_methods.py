"""The calibration methods of :class:`rnadiff.RNADiffusion` (a mixin: the face stays under
600 lines). Each validates its arguments and delegates to :mod:`rnadiff.model._calibration`;
training runs all three (user guide: calibration)."""

from __future__ import annotations

import pandas as pd

from rnadiff._errors import InputError
from rnadiff.model import _calibration
from rnadiff.model._docs import shared_docs


class Calibration:
    """:meth:`calibrate_effects`, :meth:`calibrate_spread` and :meth:`calibrate_means` of a
    trained :class:`rnadiff.RNADiffusion`."""

    @shared_docs
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

        The least-squares factor of each perturbation's predicted onto its measured mean change
        on training control cells (:func:`rnadiff.conditioning.effect_scales`, in [0.5, 5]),
        stored in ``effect_scales`` and used where the perturbation was measured in the cell's
        context (user guide: calibration). Training runs it.

        Parameters
        ----------
        {calibrate_effects_params}

        Returns
        -------
        DataFrame
            One row per perturbation: ``scale``, ``n_cells``, and the norms of the
            ``predicted_effect`` (before scaling) and the ``observed_effect``.
        """
        self._check_trained_on(n_cells=n_cells)
        kw = dict(n_cells=n_cells, steps=steps, seed=seed, batch_size=batch_size)
        return _calibration.calibrate_effects(self, **kw, progress=progress)

    @shared_docs
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

        The mean ratio of real to predicted spread on transports between conditions measured
        in training (:func:`rnadiff.conditioning.spread_ratio`, in [0.5, 2]) is
        ``spread_scale``, by which :meth:`predict` widens each target condition's cells around
        their mean (user guide: calibration). Training runs it.

        Parameters
        ----------
        {calibrate_spread_params}

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

    @shared_docs
    def calibrate_means(
        self,
        *,
        n_cells: int = 64,
        max_conditions: int = 1000,
        steps: int = 20,
        seed: int = 0,
        batch_size: int = 2048,
        progress: bool = False,
    ) -> pd.DataFrame:
        """Measure the model's error at each measured condition's mean (mean anchoring).

        For every condition measured in training whose context has control cells: its
        training mean minus the mean of :meth:`predict` of ``n_cells`` of those control cells
        under it (each against its own values), each gene shrunk by its sampling noise
        (:mod:`rnadiff.conditioning._anchors` has the equations). A time course without a
        perturbation column: every transport between measured conditions of a context (the
        source's cells predicted at the target's time), itself included. Stored in
        ``anchors``; :meth:`predict` (``anchor=True``) corrects by it (user guide:
        calibration). Training runs it (``TrainConfig.anchor_cells``).

        Parameters
        ----------
        {calibrate_means_params}

        Returns
        -------
        DataFrame
            One row per condition (``source -> target`` in a time course): ``condition``,
            ``n_cells`` (training), ``n_predicted``,
            the norm of the ``residual``, and the norm it would have from sampling
            ``noise`` alone (the two training means' and the predicted cells').
        """
        self._check_trained_on(n_cells=n_cells, max_conditions=max_conditions)
        kw = dict(n_cells=n_cells, max_conditions=max_conditions, steps=steps, seed=seed)
        return _calibration.calibrate_means(self, **kw, batch_size=batch_size, progress=progress)

    def _check_trained_on(self, **counts: int) -> None:
        if self.adata is None:
            raise InputError("this model has no training data; load it with adata=...")
        for name, value in counts.items():
            if value < 1:
                raise InputError(f"{name} must be at least 1, got {value}")
