"""The ground truth returned by :func:`rnadiff.datasets.simulate`, for any condition."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd

from rnadiff._errors import InputError
from rnadiff.data._simulate_model import Model, SimulationConfig

__all__ = ["SimulationTruth", "condition_key"]

SCALE = 1e4  # expression is reported per 1e4 UMIs, as after normalize_total(target_sum=1e4)


def condition_key(cell_type: str, perturbation: str, dose: float, time: float) -> str:
    """Row label of a condition in the truth tables and ``obs["condition"]``."""
    return f"{cell_type}|{perturbation}|{dose:g}|{time:g}"


@dataclass(frozen=True)
class SimulationTruth:
    """Exact, noise-free quantities of a simulation, sampled or not.

    Expression is the *expected normalised expression*: ``1e4 * E[lambda_ig / L_i]``, the mean
    over the condition's cells of the NB means divided by the library size, which equals
    ``1e4 * sum_s P_s q_s`` (state composition times state profiles). ``log_means`` is
    ``log1p`` of it (the log of the mean, not the mean of log1p of single cells).

    Attributes
    ----------
    config : SimulationConfig
        Everything the simulation was asked for; with ``seed`` it reproduces the data.
    seed : int
        The seed.
    conditions : pandas.DataFrame
        One row per sampled condition (index: the condition key of ``obs["condition"]``):
        ``cell_type``, ``perturbation``, ``perturbation_type``, ``dose``, ``time``, ``n_cells``.
    means, log_means : pandas.DataFrame
        Conditions x genes: expected expression per 1e4 UMIs, and its ``log1p``.
    compositions : pandas.DataFrame
        Conditions x states: true state proportions (rows sum to 1).
    genes : pandas.DataFrame
        Per gene: ``program`` (-1: none), ``loading``, ``baseline`` (mu_g),
        ``inverse_dispersion`` (NB theta_g).
    drugs : pandas.DataFrame
        Every library drug: ``smiles``, ``ec50`` (uM), ``hill``, ``tau`` (h), ``sampled``.
    knockouts : pandas.DataFrame
        Sampled knock-outs: ``program``, ``efficiency``, ``tau`` (h).
    drug_effects : pandas.DataFrame
        Every library drug x genes: its effect vector, the shift of the gene log rates at
        saturating dose and time for unit responsiveness (``W^T u_p + beta_p``).
    interactions : pandas.DataFrame
        Sampled combinations x programs: the interaction term ``sum_{p<q} gamma_pq`` added
        (times ``A_p A_q`` and the responsiveness) to program activities; zero when
        ``interaction=0``.
    """

    config: SimulationConfig
    seed: int
    conditions: pd.DataFrame = field(repr=False)  # tables stay out of repr(): it would be pages
    means: pd.DataFrame = field(repr=False)
    log_means: pd.DataFrame = field(repr=False)
    compositions: pd.DataFrame = field(repr=False)
    genes: pd.DataFrame = field(repr=False)
    drugs: pd.DataFrame = field(repr=False)
    knockouts: pd.DataFrame = field(repr=False)
    drug_effects: pd.DataFrame = field(repr=False)
    interactions: pd.DataFrame = field(repr=False)
    model: Model = field(repr=False)  # the parameters; the methods below read them

    def mean(
        self,
        cell_type: str,
        perturbation: str,
        *,
        time: float,
        dose: float | Sequence[float] = 0.0,
        state: str | None = None,
        log: bool = False,
    ) -> pd.Series:
        """Expected expression per 1e4 UMIs of any condition (sampled or held out).

        Parameters
        ----------
        cell_type : str
            A name of ``truth.conditions["cell_type"]``.
        perturbation : str
            ``"control"``, a library drug, a gene (knock-out), or components joined by ``"+"``.
        time : float
            Hours after treatment.
        dose : float or sequence of float, default 0.0
            uM of every chemical component, or one dose per component (ignored for genes).
        state : str, optional
            Expression of the cells in this state only, instead of the state mixture.
        log : bool, default False
            Return ``log1p`` of the expression.

        Returns
        -------
        pandas.Series
            Indexed by gene.

        Examples
        --------
        >>> adata, truth = simulate(5000, seed=0)  # doctest: +SKIP
        >>> truth.mean("celltype_0", "Imatinib+Vorinostat", dose=3.0, time=48.0)  # doctest: +SKIP
        """
        ct = self._cell_type(cell_type)
        q = self.model.profiles(ct, perturbation, dose, time)
        if state is None:
            values = self.model.composition(ct, perturbation, dose, time) @ q
        else:
            values = q[self._state(state)]
        values = SCALE * values
        return pd.Series(np.log1p(values) if log else values, index=self.model.genes)

    def sample(
        self,
        cell_type: str,
        perturbation: str,
        *,
        time: float,
        dose: float = 0.0,
        n_cells: int,
        seed: int = 0,
    ) -> ad.AnnData:
        """Fresh cells of any condition (sampled or held out): counts drawn as the data's,
        from a random stream of their own (``seed``), so they are a replicate of the
        condition independent of the data's cells, e.g. to measure how well the true
        condition itself scores against the real held-out cells (a noise ceiling).

        Returns
        -------
        anndata.AnnData
            ``n_cells`` x genes, integer counts (CSR) in ``X``; ``obs``: ``cell_type``,
            ``perturbation``, ``dose``, ``time``, ``state``.
        """
        from rnadiff.data._simulate import _sample_cells  # (that module imports this one)
        from rnadiff.data._simulate_model import stream

        if int(n_cells) < 1:
            raise InputError(f"n_cells must be at least 1, got {n_cells}")
        ct = self._cell_type(cell_type)
        q = self.model.profiles(ct, perturbation, dose, time)
        p = self.model.composition(ct, perturbation, dose, time)
        key = condition_key(cell_type, perturbation, dose, time)
        rng = stream(self.seed, "replicate", f"{seed}|{key}")
        states, x = _sample_cells(self.model, rng, q, p, int(n_cells))
        obs = pd.DataFrame(
            {
                "cell_type": cell_type,
                "perturbation": perturbation,
                "dose": float(dose),
                "time": float(time),
                "state": pd.Categorical.from_codes(states, categories=list(self.config.states)),
            },
            index=pd.Index([f"replicate{i:07d}" for i in range(int(n_cells))]),
        )
        return ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=pd.Index(self.model.genes)))

    def composition(
        self, cell_type: str, perturbation: str, *, time: float, dose: float | Sequence = 0.0
    ) -> pd.Series:
        """True state proportions of any condition, indexed by state (sums to 1)."""
        p = self.model.composition(self._cell_type(cell_type), perturbation, dose, time)
        return pd.Series(p, index=list(self.config.states))

    def activity(
        self, cell_type: str, perturbation: str, *, time: float, dose: float | Sequence = 0.0
    ) -> pd.DataFrame:
        """Program activities ``z`` of each state (states x programs) of any condition."""
        z = self.model.activity(self._cell_type(cell_type), perturbation, dose, time)
        return pd.DataFrame(z, index=list(self.config.states))

    def log_rates(
        self, cell_type: str, perturbation: str, *, time: float, dose: float | Sequence = 0.0
    ) -> pd.DataFrame:
        """Gene log rates ``eta`` of each state (states x genes) before normalisation.

        With ``interaction=0`` these, like :meth:`activity`, are exactly additive:
        ``eta(A+B) - eta(control) = (eta(A) - eta(control)) + (eta(B) - eta(control))``.
        """
        eta = self.model.log_rates(self._cell_type(cell_type), perturbation, dose, time)
        return pd.DataFrame(eta, index=list(self.config.states), columns=self.model.genes)

    def interaction(self, a: str, b: str) -> np.ndarray:
        """Program interaction term ``gamma_ab`` of any pair of single perturbations."""
        self.model.kind(a), self.model.kind(b)  # raises on an unknown name
        return self.model.interaction(a, b).copy()

    def _cell_type(self, name: str) -> int:
        if name not in self.model.cell_types:
            raise InputError(f"unknown cell type {name!r}; known: {self.model.cell_types}")
        return self.model.cell_types.index(name)

    def _state(self, name: str) -> int:
        if name not in self.config.states:
            raise InputError(f"unknown state {name!r}; known: {list(self.config.states)}")
        return self.config.states.index(name)
