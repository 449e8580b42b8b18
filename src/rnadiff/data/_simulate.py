r"""Simulated single-cell perturbation screens with exact ground truth.

Generative model
----------------
Genes :math:`g` belong to at most one of :math:`K` programs (loading :math:`W_{kg}`, zero for
background genes). For cell type :math:`c`, state :math:`s` and a set :math:`\pi` of
perturbations :math:`p` at dose :math:`d_p` (uM) and time :math:`t` (h):

.. math::

    h_p(d) &= d^{n_p} / (\mathrm{EC50}_p^{n_p} + d^{n_p}) \quad (h_p = 1 \text{ for a knock-out}),
    \qquad A_p = h_p(d_p)\,(1 - e^{-t/\tau_p}) \\
    z_{cs} &= a_c + b_{cs} + r_c \odot \Big(\sum_p A_p u_p
              + \sum_{p<q} A_p A_q \gamma_{pq}\Big) \qquad \text{(program activities)} \\
    \eta_{gcs} &= \mu_g + o_{cg} + \sum_k W_{kg} z_{csk} + \sum_p A_p \beta_{pg},
    \qquad q_{gcs} = \mathrm{softmax}_g(\eta_{cs}) \\
    \text{drug: } & u_p = M^\top x_p / \sqrt{|x_p|}, \quad
    \beta_p = \sigma_\beta B^\top x_p / \sqrt{|x_p|}, \quad \rho_p = R^\top x_p / \sqrt{|x_p|}
    \quad (x_p \text{: Morgan fingerprint}) \\
    \text{knock-out: } & u_{p,k(g)} = -\sigma_{ko} U(0.5, 1.5) \text{ plus two random programs},
    \quad \beta_{p,g} = \log(1 - e_p) \text{ at the target only} \\
    P_c(t) &= P_c(0) \exp(Q_c t), \qquad
    \log Q_{c,s \to s\pm 1} = \log Q^0_{c,s \to s\pm 1} + \sum_p h_p(d_p) \rho_{p,s \to s\pm 1} \\
    \text{cell } i: & \; s_i \sim \mathrm{Cat}(P_c(t)), \; L_i \sim \mathrm{LogNormal}(\log L_{med},
    \sigma_L^2), \; \varepsilon_i \sim N(0, \sigma_\varepsilon^2 I_K) \\
    \lambda_{ig} &= L_i\, q_{g c s_i} \exp\big(\textstyle\sum_k W_{kg} \varepsilon_{ik}
                    - \tfrac12 \sigma_\varepsilon^2 \sum_k W_{kg}^2\big),
    \qquad Y_{ig} \sim \mathrm{NB}(\lambda_{ig}, \theta_g)

:math:`M, R, B` are fixed Gaussian maps, so drugs with similar fingerprints act alike; a
knock-out's rate shift :math:`\rho_p` is Gaussian. EC50, :math:`n_p`, :math:`\tau_p`,
:math:`e_p`, :math:`\gamma_{pq}` (scaled by ``interaction``) are drawn per name, so held-out
drugs, knock-outs and pairs have a truth too. Expression effects build up as
:math:`1 - e^{-t/\tau_p}`; transition rates change at :math:`t = 0` and the composition follows
the chain. :math:`\varepsilon_i` is per-cell program noise with mean-one effect on the rate.

The truth is :math:`10^4\,E[\lambda_{ig}/L_i] = 10^4 \sum_s P_{cs}\, q_{gcs}`
(``SimulationTruth``). With ``interaction=0``, :math:`z`, :math:`\eta` and :math:`\log Q` of
``A+B`` are exactly the control's plus both single shifts; the population mean is not additive
(softmax normalisation, state mixture).
"""

from __future__ import annotations

import dataclasses
import itertools

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from rnadiff._errors import InputError
from rnadiff.data._simulate_drugs import DRUG_LIBRARY
from rnadiff.data._simulate_model import CONTROL, Model, SimulationConfig, stream
from rnadiff.data._simulate_truth import SCALE, SimulationTruth, condition_key

__all__ = ["SimulationConfig", "SimulationTruth", "simulate"]

_MAX_VALUES_PER_CHUNK = 2_000_000  # cells x genes drawn at once: bounds memory for any n_cells


def simulate(
    n_cells: int | None = None,
    *,
    seed: int = 0,
    config: SimulationConfig | None = None,
    **options,
) -> tuple[ad.AnnData, SimulationTruth]:
    """Simulate a single-cell perturbation screen and return it with its exact ground truth.

    Cell types x times x (control, knock-outs, drugs x doses, combinations) are sampled; cells
    are allocated evenly to conditions (controls ``control_weight`` times more). The model is
    in the module docstring of ``rnadiff.data._simulate``.

    Parameters
    ----------
    n_cells : int, optional
        Total number of cells (default ``SimulationConfig.n_cells``, 20 000).
    seed : int, default 0
        Same seed and options give identical data and truth.
    config : SimulationConfig, optional
        All options at once; ``options`` override its fields.
    **options
        Any field of :class:`SimulationConfig`, e.g. ``n_genes=2000``, ``interaction=0.5``,
        ``library_median=5000``, ``drugs=("Imatinib", "Dasatinib")``.

    Returns
    -------
    adata : anndata.AnnData
        ``X``: raw UMI counts (CSR, float32, integer values), cells grouped by condition.
        ``obs``: ``cell_type``, ``perturbation`` (``"control"``, a drug, a gene, ``"A+B"``),
        ``perturbation_type`` (control/genetic/chemical/combination), ``dose`` (uM of each
        chemical component, 0 otherwise), ``time`` (h), ``state``, ``smiles`` (components'
        SMILES joined by ``"."``, empty without a drug), ``condition`` (row key of the truth).
        ``var_names``: genes. ``uns["simulation"]``: the seed and options.
    truth : SimulationTruth
        Exact means and state compositions of the sampled conditions, and methods that give
        them for any other cell type, perturbation, dose, time.

    Examples
    --------
    >>> from rnadiff.datasets import simulate
    >>> adata, truth = simulate(2000, n_genes=100, seed=1)
    >>> truth.mean("celltype_0", "Vorinostat", dose=0.3, time=48.0).shape
    (100,)
    """
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(SimulationConfig)})
    if unknown:
        raise InputError(f"unknown simulate() options {unknown}; see SimulationConfig")
    config = dataclasses.replace(config or SimulationConfig(), **options)
    if n_cells is not None:
        config = dataclasses.replace(config, n_cells=n_cells)
    model = Model(config, seed)
    conditions = _conditions(model, *_design(model))
    conditions["n_cells"] = _allocate(config, conditions)

    step = max(1, _MAX_VALUES_PER_CHUNK // config.n_genes)
    chunks, states, means, compositions = [], [], [], []
    for row in conditions.itertuples():
        ct = model.cell_types.index(row.cell_type)
        q = model.profiles(ct, row.perturbation, row.dose, row.time)
        p = model.composition(ct, row.perturbation, row.dose, row.time)
        means.append(SCALE * p @ q)
        compositions.append(p)
        rng = stream(seed, "cells", row.Index)  # one stream per condition: reproducible
        for start in range(0, row.n_cells, step):
            s, x = _sample_cells(model, rng, q, p, min(step, row.n_cells - start))
            states.append(s)
            chunks.append(x)

    obs = _obs(conditions, np.concatenate(states), config)
    adata = ad.AnnData(
        X=sp.vstack(chunks, format="csr"), obs=obs, var=pd.DataFrame(index=pd.Index(model.genes))
    )
    adata.uns["simulation"] = _params_record(config, seed)
    truth = _truth(model, conditions, means, compositions)
    return adata, truth


def _design(model: Model) -> tuple[list[str], list[str], list[str]]:
    """The sampled knock-outs, drugs and combinations."""
    c, rng = model.config, stream(model.seed, "design")
    top = {}  # the highest-loading activated gene of each program is its regulator
    for g in np.argsort(-model.loading, kind="stable"):
        if model.loading[g] > 0:
            top.setdefault(int(model.program[g]), model.genes[g])
    programs = sorted(top)
    if len(programs) < c.n_genetic:
        raise InputError(f"only {len(programs)} programs have genes; lower n_genetic")
    picked = rng.choice(len(programs), size=c.n_genetic, replace=False)
    genetic = [top[programs[i]] for i in sorted(picked)]
    if c.drugs is not None:
        drugs = list(c.drugs)
    else:
        picked = rng.choice(len(DRUG_LIBRARY), size=c.n_drugs, replace=False)
        drugs = [list(DRUG_LIBRARY)[i] for i in sorted(picked)]
    if c.combinations is not None:
        combos = list(c.combinations)
        for combo in combos:
            model.components(combo, 0.0)  # raises on an unknown or repeated component
    else:
        pairs = list(itertools.combinations(genetic + drugs, 2))
        if c.n_combinations > len(pairs):
            raise InputError(f"n_combinations={c.n_combinations} > {len(pairs)} possible pairs")
        picked = rng.choice(len(pairs), size=c.n_combinations, replace=False)
        combos = ["+".join(pairs[i]) for i in sorted(picked)]
    return genetic, drugs, combos


def _conditions(model: Model, genetic, drugs, combos) -> pd.DataFrame:
    """One row per sampled condition, indexed by its condition key."""
    c, rows = model.config, []
    perturbations = [(CONTROL, "control")] + [(g, "genetic") for g in genetic]
    perturbations += [(d, "chemical") for d in drugs] + [(p, "combination") for p in combos]
    for ct, t, (pert, kind) in itertools.product(model.cell_types, c.times, perturbations):
        chemical = [n for n in pert.split("+") if pert != CONTROL and model.kind(n) == "chemical"]
        smiles = ".".join(DRUG_LIBRARY[n] for n in chemical)
        for dose in c.doses if chemical else (0.0,):
            rows.append((condition_key(ct, pert, dose, t), ct, pert, kind, dose, t, smiles))
    columns = ["key", "cell_type", "perturbation", "perturbation_type", "dose", "time", "smiles"]
    return pd.DataFrame(rows, columns=columns).set_index("key")


def _allocate(config: SimulationConfig, conditions: pd.DataFrame) -> np.ndarray:
    """Cells per condition: proportional to the weights, the rounding remainder to the first."""
    weight = np.where(conditions["perturbation"] == CONTROL, config.control_weight, 1.0)
    share = config.n_cells * weight / weight.sum()
    n = np.floor(share).astype(int)
    extra = config.n_cells - n.sum()
    n[np.argsort(-(share - n), kind="stable")[:extra]] += 1
    return n


def _sample_cells(model: Model, rng: np.random.Generator, q, p, n: int):
    """States and NB counts (CSR) of ``n`` cells of one condition."""
    c = model.config
    states = rng.choice(len(p), size=n, p=p)
    library = c.library_median * np.exp(rng.normal(0.0, c.library_sd, n))
    eps = rng.normal(0.0, c.cell_noise, (n, c.n_programs))
    # Mean-one log-normal per-cell program noise: E[lambda | L, state] = L q stays exact.
    log_noise = eps @ model.W - 0.5 * c.cell_noise**2 * (model.W**2).sum(axis=0)
    rate = library[:, None] * q[states] * np.exp(log_noise)
    counts = rng.poisson(rate * rng.gamma(model.theta, 1.0 / model.theta, rate.shape))
    return states, sp.csr_matrix(counts.astype(np.float32))


def _obs(conditions: pd.DataFrame, states: np.ndarray, config: SimulationConfig) -> pd.DataFrame:
    """Per-cell covariates, built from per-condition codes (lean for many cells)."""
    n = conditions["n_cells"].to_numpy()
    code = np.repeat(np.arange(len(conditions)), n)
    obs = {}
    for column in ("cell_type", "perturbation", "perturbation_type", "smiles"):
        values = conditions[column].astype("category")
        obs[column] = pd.Categorical.from_codes(
            values.cat.codes.to_numpy()[code], categories=values.cat.categories
        )
    obs["dose"] = conditions["dose"].to_numpy(dtype=float)[code]
    obs["time"] = conditions["time"].to_numpy(dtype=float)[code]
    obs["state"] = pd.Categorical.from_codes(states, categories=list(config.states))
    obs["condition"] = pd.Categorical.from_codes(code, categories=list(conditions.index))
    names = pd.Index([f"cell{i:07d}" for i in range(len(code))])
    return pd.DataFrame(obs, index=names)


def _params_record(config: SimulationConfig, seed: int) -> dict:
    """``uns["simulation"]``: the options that made the data, in .h5ad-writable types."""
    record = {"seed": seed}
    for name, value in dataclasses.asdict(config).items():
        if value is not None:
            record[name] = list(value) if isinstance(value, tuple) else value
    return record


def _truth(model: Model, conditions: pd.DataFrame, means, compositions) -> SimulationTruth:
    """The truth tables of the sampled conditions and the parameter tables."""
    c, genes = model.config, model.genes
    means = pd.DataFrame(np.array(means).reshape(-1, c.n_genes), conditions.index, genes)
    comps = np.array(compositions).reshape(-1, len(c.states))
    compositions = pd.DataFrame(comps, conditions.index, list(c.states))
    sampled = set(conditions["perturbation"])
    drugs = pd.DataFrame(
        [
            {k: model.drug(name)[k] for k in ("smiles", "ec50", "hill", "tau")}
            | {"sampled": name in sampled}
            for name in DRUG_LIBRARY
        ],
        index=pd.Index(list(DRUG_LIBRARY), name="drug"),
    )
    effects = [
        model.drug(d)["program_effect"] @ model.W + model.drug(d)["gene_effect"]
        for d in drugs.index
    ]
    knockouts = conditions.loc[
        conditions["perturbation_type"] == "genetic", "perturbation"
    ].unique()
    ko_table = pd.DataFrame(
        {
            "program": [int(model.program[model.gene_index[g]]) for g in knockouts],
            "efficiency": [model.knockout(g)["efficiency"] for g in knockouts],
            "tau": [model.knockout(g)["tau"] for g in knockouts],
        },
        index=pd.Index(knockouts, name="gene"),
    )
    combos = conditions.loc[
        conditions["perturbation_type"] == "combination", "perturbation"
    ].unique()
    interactions = np.zeros((len(combos), c.n_programs))
    for i, combo in enumerate(combos):
        for a, b in itertools.combinations(combo.split("+"), 2):
            interactions[i] += model.interaction(a, b)
    return SimulationTruth(
        config=c,
        seed=model.seed,
        conditions=conditions,
        means=means,
        log_means=np.log1p(means),
        compositions=compositions,
        genes=pd.DataFrame(
            {
                "program": model.program,
                "loading": model.loading,
                "baseline": model.baseline,
                "inverse_dispersion": model.theta,
            },
            index=pd.Index(genes, name="gene"),
        ),
        drugs=drugs,
        knockouts=ko_table,
        drug_effects=pd.DataFrame(np.array(effects), drugs.index, genes),
        interactions=pd.DataFrame(interactions, pd.Index(combos, name="combination")),
        model=model,
    )
