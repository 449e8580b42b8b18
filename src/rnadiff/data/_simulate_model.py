"""Parameters of the simulator and its noise-free quantities (see ``_simulate`` for the equations).

Every parameter tied to a name (a drug, a knocked-out gene, a pair of perturbations) is drawn
from a random stream seeded by ``(seed, kind, name)``, so it does not depend on which
perturbations were sampled: the truth of a held-out drug, knock-out or combination is defined.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from scipy.linalg import expm

from rnadiff._errors import InputError
from rnadiff.data._simulate_drugs import DRUG_LIBRARY, FP_BITS, morgan_fingerprint

__all__ = ["CONTROL", "SimulationConfig"]

CONTROL = "control"
_TAGS = {
    "world": 0, "drug": 1, "bit": 2, "knockout": 3, "pair": 4, "design": 5, "cells": 6,
    "replicate": 7,
}  # fmt: skip


@dataclass(frozen=True)
class SimulationConfig:
    """Sizes and strengths of a simulated perturbation screen (doses in uM, times in hours)."""

    n_cells: int = 20_000
    n_genes: int = 500
    n_programs: int = 20  # gene modules; a gene is in one module or in none (background)
    n_cell_types: int = 3
    states: tuple[str, ...] = ("progenitor", "intermediate", "mature")  # ordered trajectory
    n_genetic: int = 8  # knock-outs sampled: the top gene of as many distinct programs
    n_drugs: int = 10  # drugs sampled from DRUG_LIBRARY; the others are held out
    n_combinations: int = 6  # pairs of sampled single perturbations, "A+B"
    drugs: tuple[str, ...] | None = None  # library names to sample instead of a random draw
    combinations: tuple[str, ...] | None = None  # e.g. ("Imatinib+G0012",) instead of a draw
    doses: tuple[float, ...] = (0.1, 1.0, 10.0)  # of every chemical component (uM)
    times: tuple[float, ...] = (6.0, 24.0, 72.0)  # hours after treatment
    interaction: float = 0.0  # sd of the pair-specific program term; 0 = additive combinations
    library_median: float = 3000.0  # median UMIs per cell (log-normal library size)
    library_sd: float = 0.4  # sd of log library size
    inverse_dispersion: float = 8.0  # median NB theta over genes (variance mu + mu^2 / theta)
    cell_noise: float = 0.25  # sd of per-cell program activity around its state's mean
    control_weight: float = 3.0  # cells in a control condition relative to a perturbed one
    background_fraction: float = 0.3  # genes in no program
    cell_type_scale: float = 1.0  # sd of cell-type program activity
    state_scale: float = 0.7  # sd of each step of program activity along the states
    knockout_scale: float = 1.0  # loss of activity of the knocked-out gene's program
    drug_scale: float = 0.6  # sd of a drug's program effect at saturation
    drug_gene_scale: float = 0.3  # sd of a drug's direct per-gene effect at saturation
    rate_scale: float = 1.0  # sd of a perturbation's shift of log transition rates

    def __post_init__(self) -> None:
        for name in ("n_cells", "n_genes", "n_programs", "n_cell_types"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if len(self.states) < 2 or len(set(self.states)) != len(self.states):
            raise InputError(f"states must be at least two distinct names, got {self.states}")
        if not 0 <= self.n_genetic <= self.n_programs:
            raise InputError(f"n_genetic must be in [0, n_programs], got {self.n_genetic}")
        if self.drugs is None and not 0 <= self.n_drugs <= len(DRUG_LIBRARY):
            raise InputError(f"n_drugs must be in [0, {len(DRUG_LIBRARY)}], got {self.n_drugs}")
        unknown = sorted(set(self.drugs or ()) - set(DRUG_LIBRARY))
        if unknown:
            raise InputError(f"drugs not in DRUG_LIBRARY: {unknown}")
        if not self.doses or min(self.doses) <= 0 or not self.times or min(self.times) < 0:
            raise InputError("doses must be positive and times non-negative, one at least each")
        for name in ("interaction", "library_sd", "cell_noise", "background_fraction"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be non-negative, got {getattr(self, name)}")
        if min(self.library_median, self.inverse_dispersion, self.control_weight) <= 0:
            raise InputError("library_median, inverse_dispersion, control_weight must be > 0")


def stream(seed: int, kind: str, name: str = "") -> np.random.Generator:
    """Random stream of one named part of the model, independent of every other part."""
    return np.random.default_rng([seed, _TAGS[kind], zlib.crc32(name.encode())])


def hill(dose: float, ec50: float, n: float) -> float:
    """Fraction of the maximal effect at ``dose``: ``d^n / (EC50^n + d^n)`` (0 at dose 0)."""
    return 0.0 if dose <= 0 else float(1.0 / (1.0 + (ec50 / dose) ** n))


class Model:
    """The fixed parameters of one simulated world, and its exact noise-free quantities."""

    def __init__(self, config: SimulationConfig, seed: int) -> None:
        self.config, self.seed = config, seed
        c, rng = config, stream(seed, "world")
        g, k, n_ct, n_s = c.n_genes, c.n_programs, c.n_cell_types, len(c.states)
        self.genes = [f"G{i:04d}" for i in range(g)]
        self.gene_index = {name: i for i, name in enumerate(self.genes)}
        self.cell_types = [f"celltype_{i}" for i in range(n_ct)]
        self.program = np.where(rng.random(g) < c.background_fraction, -1, rng.integers(0, k, g))
        sign = np.where(rng.random(g) < 0.2, -1.0, 1.0)  # a few genes are repressed by their module
        self.loading = np.where(self.program >= 0, sign * rng.uniform(0.5, 1.5, g), 0.0)
        self.W = np.zeros((k, g))
        in_program = self.program >= 0
        self.W[self.program[in_program], np.flatnonzero(in_program)] = self.loading[in_program]
        self.baseline = rng.normal(0.0, 1.5, g)  # mu_g: log relative expression
        self.theta = c.inverse_dispersion * np.exp(rng.normal(0.0, 0.8, g))
        self.ct_activity = rng.normal(0.0, c.cell_type_scale, (n_ct, k))  # a_c
        steps = rng.normal(0.0, c.state_scale, (n_ct, n_s, k))
        steps[:, 0] = 0.0
        self.state_activity = np.cumsum(steps, axis=1)  # b_cs
        self.ct_offset = rng.normal(0.0, 0.2, (n_ct, g))  # o_cg
        self.responsiveness = np.exp(rng.normal(0.0, 0.3, (n_ct, k)))  # r_c
        self.p0 = rng.dirichlet(2.0 * np.arange(n_s, 0, -1), n_ct)  # mostly early states at t=0
        forward = np.exp(rng.uniform(np.log(0.01), np.log(0.04), (n_ct, n_s - 1)))
        backward = np.exp(rng.uniform(np.log(0.002), np.log(0.01), (n_ct, n_s - 1)))
        self.log_rates0 = np.log(np.concatenate([forward, backward], axis=1))  # per hour
        # The fixed linear maps of a fingerprint to program effects and to transition rates.
        self.drug_map = rng.normal(0.0, c.drug_scale, (FP_BITS, k))
        self.drug_rate_map = rng.normal(0.0, c.rate_scale, (FP_BITS, 2 * (n_s - 1)))
        self._cache: dict[tuple[str, str], dict] = {}  # per-name parameters, drawn once

    # -- named perturbations --------------------------------------------------------------------
    def kind(self, name: str) -> str:
        """``"chemical"`` for a library drug, ``"genetic"`` for a gene, else an InputError."""
        if name in DRUG_LIBRARY:
            return "chemical"
        if name in self.gene_index:
            return "genetic"
        raise InputError(f"unknown perturbation {name!r}: neither a library drug nor a gene")

    def drug(self, name: str) -> dict:
        """EC50 (uM), Hill coefficient, tau (h) and the fingerprint-determined effects of a drug."""
        if ("drug", name) not in self._cache:
            self._cache["drug", name] = self._draw_drug(name)
        return self._cache["drug", name]

    def _draw_drug(self, name: str) -> dict:
        rng = stream(self.seed, "drug", name)
        fp = morgan_fingerprint(DRUG_LIBRARY[name])
        on = np.flatnonzero(fp)
        scale = 1.0 / np.sqrt(max(len(on), 1))  # effect size independent of molecule size
        direct = sum(stream(self.seed, "bit", str(j)).standard_normal(len(self.genes)) for j in on)
        return {
            "smiles": DRUG_LIBRARY[name],
            "ec50": float(np.exp(rng.uniform(np.log(0.03), np.log(30.0)))),
            "hill": float(rng.uniform(0.8, 2.5)),
            "tau": float(np.exp(rng.uniform(np.log(4.0), np.log(48.0)))),
            "program_effect": scale * self.drug_map[on].sum(axis=0),
            "gene_effect": self.config.drug_gene_scale * scale * direct,
            "rate_effect": scale * self.drug_rate_map[on].sum(axis=0),
        }

    def knockout(self, gene: str) -> dict:
        """Efficiency, tau (h) and effects of knocking out ``gene``."""
        if ("knockout", gene) not in self._cache:
            self._cache["knockout", gene] = self._draw_knockout(gene)
        return self._cache["knockout", gene]

    def _draw_knockout(self, gene: str) -> dict:
        c, rng = self.config, stream(self.seed, "knockout", gene)
        target = self.gene_index[gene]
        efficiency = float(rng.uniform(0.7, 0.95))
        program_effect = np.zeros(c.n_programs)
        others = rng.choice(c.n_programs, size=min(2, c.n_programs), replace=False)
        program_effect[others] = rng.normal(0.0, 0.5 * c.knockout_scale, len(others))
        if self.program[target] >= 0:  # the target regulates its own module
            program_effect[self.program[target]] = -c.knockout_scale * rng.uniform(0.5, 1.5)
        gene_effect = np.zeros(len(self.genes))
        gene_effect[target] = np.log1p(-efficiency)
        return {
            "efficiency": efficiency,
            "tau": float(np.exp(rng.uniform(np.log(12.0), np.log(48.0)))),
            "program_effect": program_effect,
            "gene_effect": gene_effect,
            "rate_effect": rng.normal(0.0, c.rate_scale, 2 * (len(c.states) - 1)),
        }

    def params(self, name: str) -> dict:
        return self.drug(name) if self.kind(name) == "chemical" else self.knockout(name)

    def interaction(self, a: str, b: str) -> np.ndarray:
        """Program term gamma_ab of the pair (symmetric; zero when ``interaction`` is 0)."""
        key = "+".join(sorted((a, b)))
        return self.config.interaction * stream(self.seed, "pair", key).standard_normal(
            self.config.n_programs
        )

    # -- a condition ----------------------------------------------------------------------------
    def components(self, perturbation: str, dose: float | tuple[float, ...]) -> list:
        """``(name, h)`` per component: ``h`` is the Hill fraction of a drug, 1 for a knock-out."""
        if perturbation == CONTROL:
            return []
        names = perturbation.split("+")
        if len(set(names)) != len(names):
            raise InputError(f"perturbation {perturbation!r} repeats a component")
        doses = np.broadcast_to(np.asarray(dose, dtype=float), (len(names),))
        out = []
        for name, d in zip(names, doses, strict=True):
            if self.kind(name) == "genetic":
                out.append((name, 1.0))
            else:
                drug = self.drug(name)
                out.append((name, hill(float(d), drug["ec50"], drug["hill"])))
        return out

    def shifts(self, cell_type: int, perturbation: str, dose, time: float):
        """Program shift (K,), gene shift (G,) and log-rate shift (T,) of a condition."""
        comps = self.components(perturbation, dose)
        act = [h * (1.0 - np.exp(-time / self.params(n)["tau"])) for n, h in comps]
        program = np.zeros(self.config.n_programs)
        gene, rate = np.zeros(len(self.genes)), np.zeros(self.log_rates0.shape[1])
        for (name, h), a in zip(comps, act, strict=True):
            p = self.params(name)
            program += a * p["program_effect"]
            gene += a * p["gene_effect"]
            rate += h * p["rate_effect"]
        for i in range(len(comps)):
            for j in range(i + 1, len(comps)):
                program += act[i] * act[j] * self.interaction(comps[i][0], comps[j][0])
        return self.responsiveness[cell_type] * program, gene, rate

    def activity(self, cell_type: int, perturbation: str, dose, time: float) -> np.ndarray:
        """Program activities z of each state, shape ``(S, K)``."""
        program, _, _ = self.shifts(cell_type, perturbation, dose, time)
        return self.ct_activity[cell_type] + self.state_activity[cell_type] + program

    def log_rates(self, cell_type: int, perturbation: str, dose, time: float) -> np.ndarray:
        """Gene log rates eta of each state (before normalisation), shape ``(S, G)``."""
        program, gene, _ = self.shifts(cell_type, perturbation, dose, time)
        z = self.ct_activity[cell_type] + self.state_activity[cell_type] + program
        return self.baseline + self.ct_offset[cell_type] + z @ self.W + gene

    def profiles(self, cell_type: int, perturbation: str, dose, time: float) -> np.ndarray:
        """Expected fraction of a cell's UMIs per gene in each state, ``softmax(eta)``, (S, G)."""
        eta = self.log_rates(cell_type, perturbation, dose, time)
        q = np.exp(eta - eta.max(axis=1, keepdims=True))
        return q / q.sum(axis=1, keepdims=True)

    def composition(self, cell_type: int, perturbation: str, dose, time: float) -> np.ndarray:
        """State proportions ``p0 expm(Q t)`` of the perturbed chain, shape ``(S,)``."""
        _, _, rate = self.shifts(cell_type, perturbation, dose, time)
        n_s = len(self.config.states)
        k = np.exp(self.log_rates0[cell_type] + rate)
        q = np.zeros((n_s, n_s))
        q[np.arange(n_s - 1), np.arange(1, n_s)] = k[: n_s - 1]  # forward s -> s+1
        q[np.arange(1, n_s), np.arange(n_s - 1)] = k[n_s - 1 :]  # backward s+1 -> s
        q -= np.diag(q.sum(axis=1))
        p = self.p0[cell_type] @ expm(q * time)
        p = np.clip(p, 0.0, None)
        return p / p.sum()
