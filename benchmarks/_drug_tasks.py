"""Drugs, doses, combinations and fate (issue 22): standalone benchmark tasks.

LINCS L1000 (``lincs2014_a375_doses``) is **bulk**: one row per well (A375, 24 h, 978 landmark
genes, log2), 59 kinase inhibitors x 6 doses and 26 DMSO wells. It tests dose and structure,
not single-cell noise. The simulator (:func:`rnadiff.datasets.simulate`) has a known truth.

Every prediction is scored on the model's log-normalized scale (natural log) against the real
held-out cells / wells, with the context's control cells as the reference of the change
(:func:`rnadiff.evaluation._metrics.response_metrics`, means only). Baselines are means of
measured conditions shifted onto the control (``control + (mean - control mean)``).

Tasks (one training per seed; the split of ``lincs_unseen_drug`` and the simulated worlds
change with the seed):

- ``lincs_dose``: every drug's 0.37 and 1.11 uM held out (fold ``interpolation``) and its
  10 uM (fold ``extrapolation``); predicted from the DMSO wells. Baselines: nearest measured
  dose (in log dose), linear in log dose (between / beyond the two nearest measured doses),
  train mean (all perturbed training wells).
- ``lincs_unseen_drug``: 20% of drugs held out with all their doses, predicted from SMILES.
  Baselines: train mean of the training drugs at that dose; the training drug nearest by
  Tanimoto similarity, at that dose.
- ``lincs_drug_rank``: on the ``lincs_unseen_drug`` model, each held-out drug's 10 uM change
  is the target; all drugs are ranked (held-out ones by structure). Baselines: Tanimoto-kNN
  (an unseen candidate's signature is its most similar training drug's) and cosine to the
  measured signatures (an unseen candidate gets the training drugs' mean signature).
- ``sim_dose``: simulator, 8 drugs x 5 doses, 2 cell types; 1 uM held out (interpolation) and
  10 uM (extrapolation).
- ``sim_combo``: simulator, singles (4 knock-outs, 4 drugs) and 6 pairs; every pair held out,
  predicted from the singles; folds ``additive truth`` (interaction 0) and ``with
  interactions`` (interaction 1). Baseline: additive (both single shifts summed). Fold
  ``with interactions, pair measured in the other type``: each pair measured in one of the two
  cell types (alternating) and held out in the other, where it is predicted; baselines
  additive, ``nearest-context additive`` (the pair's measured shift in the other type) and
  ``additive + interaction measured elsewhere`` (additive plus what the pair adds to its
  singles' shifts in the other type).
- ``sim_unseen_drug``: simulator, 30 drugs at 1 and 10 uM; 20% of drugs held out, predicted
  from SMILES; baselines as ``lincs_unseen_drug``.
- Simulated tasks also score ``oracle: the true condition (2,000 fresh cells)``: a fresh draw
  of the held-out condition from the simulator's truth (``SimulationTruth.sample``), i.e. what
  a perfect predictor scores against the real held-out cells, whose own sampling noise caps
  every method (``sim_dose``, ``sim_combo``, ``sim_unseen_drug``).
- ``sim_fate``: simulator with state transitions at 0 / 24 / 48 / 72 h; every drug's 48 h held
  out, predicted from the 48 h controls; state composition from a classifier fitted on the
  training cells, adjusted for its cross-validated confusion (as ``predict_fate``).
  Baselines: the drug's composition at the nearest measured time (24 h, the earlier of the
  two equally near) and linear interpolation between 24 and 72 h; the classifier on the real
  held-out cells is reported as the classifier's own error.
- ``hsmm_fate`` (an extra task of ``hsmm_time``): the state composition (``State``) of the
  predicted 48 h cells (classified and adjusted as in ``sim_fate``); baselines the 24 h and
  72 h compositions and their mean.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from _tasks import EXTRA_TASKS, register_standalone

from rnadiff import RNADiffusion
from rnadiff.data._molecules import fingerprints, tanimoto_matrix
from rnadiff.design._ranking import cosine, random_ranking_metrics, ranking_metrics
from rnadiff.evaluation._metrics import response_metrics
from rnadiff.fate import StateClassifier, composition, composition_error

TOP_N = (50,)
METRICS = ("pearson_delta_top50", "pearson_delta_all", "r2_mean_all", "r2_mean_top50")


def _row(task, fold, seed, evaluation, method, metric, value) -> dict:
    return dict(
        task=task, fold=fold, seed=seed, evaluation=str(evaluation), method=method,
        metric=metric, value=float(value),
    )  # fmt: skip


def _scores(task, fold, seed, evaluation, preds: dict, real, control) -> list[dict]:
    """Mean metrics of every method's prediction (cells or a mean vector)."""
    rows = []
    for method, pred in preds.items():
        pred = np.atleast_2d(np.asarray(pred, dtype=np.float32))
        m = response_metrics(pred, real, control, top_n=TOP_N, distributional=False)
        rows += [_row(task, fold, seed, evaluation, method, k, m[k]) for k in METRICS]
    return rows


def _train(adata, setup: dict, config, seed: int, *, input_type: str | None = None):
    """Set up, build and train rnadiff as the benchmark does (config's steps and model)."""
    import dataclasses

    adata = adata.copy()
    RNADiffusion.setup_anndata(adata, **setup)
    model_config = config.model_config()
    if input_type is not None:
        pre = dataclasses.replace(model_config.preprocess, input=input_type)
        model_config = dataclasses.replace(model_config, preprocess=pre)
    t0 = time.perf_counter()
    model = RNADiffusion(adata, config=model_config, seed=seed)
    model.train(config=config.train_config(seed), progress=False)
    return model, time.perf_counter() - t0


def _timings(train_s: float, predict_s: float) -> pd.DataFrame:
    return pd.DataFrame([{"method": "rnadiff", "train_s": train_s, "predict_s": predict_s}])


def _mean(model, adata, mask) -> np.ndarray:
    return model.log_expression(adata[np.asarray(mask)]).mean(0)


def _predict(model, source, target: dict, config, seed: int) -> tuple[np.ndarray, float]:
    """rnadiff's counterfactual of ``source`` under ``target`` (log expression) and seconds."""
    t0 = time.perf_counter()
    pred = model.predict(
        source, target=target, steps=config.sampler_steps, seed=seed, progress=False
    )
    return model.log_expression(pred), time.perf_counter() - t0


ORACLE = "oracle: the true condition (2,000 fresh cells)"
ORACLE_CELLS = 2000


def _oracle(model, truth, cell_type: str, perturbation: str, dose: float, seed: int, time=24.0):
    """A fresh draw of the true held-out condition, as many cells as make its mean nearly
    exact: what a perfect predictor scores against the real held-out cells (their noise
    ceiling)."""
    cells = truth.sample(
        cell_type, perturbation, time=time, dose=dose, n_cells=ORACLE_CELLS, seed=seed
    )
    return model.log_expression(cells)


def _log_interp(doses: list[float], means: list[np.ndarray], dose: float) -> np.ndarray:
    """Linear in log dose between the two measured doses around ``dose``; beyond the
    measured range, extended from the two nearest."""
    order = np.argsort(doses)
    d = np.log(np.asarray(doses, dtype=float)[order])
    m = [means[i] for i in order]
    x = np.log(dose)
    if len(d) == 1:
        return m[0]
    i = int(np.clip(np.searchsorted(d, x) - 1, 0, len(d) - 2))
    w = (x - d[i]) / (d[i + 1] - d[i])
    return (1 - w) * m[i] + w * m[i + 1]


def _nearest_dose(doses: list[float], means: list[np.ndarray], dose: float) -> np.ndarray:
    gaps = np.abs(np.log(np.asarray(doses, dtype=float)) - np.log(dose))
    return means[int(np.argmin(gaps))]


# ---------------------------------------------------------------- LINCS (bulk)

LINCS = dict(key="pert_iname", dose="pert_dose", control="DMSO")


def _lincs():
    from rnadiff import datasets

    adata = datasets.load("lincs2014_a375_doses")
    adata.obs["pert_dose"] = adata.obs["pert_dose"].astype(float)
    adata.obs_names_make_unique()
    return adata


def _lincs_setup() -> dict:
    return dict(
        perturbation_key=LINCS["key"], control=LINCS["control"], dose_key=LINCS["dose"],
        smiles_key="smiles",
    )  # fmt: skip


@register_standalone("lincs_dose")
def lincs_dose(seed: int, config):
    """Held-out doses of measured drugs (see the module doc)."""
    adata = _lincs()
    obs = adata.obs
    key, dkey = LINCS["key"], LINCS["dose"]
    folds = {"interpolation": (0.37, 1.11), "extrapolation": (10.0,)}
    held = obs[dkey].isin([d for ds in folds.values() for d in ds]).to_numpy()
    train = adata[~held]
    model, train_s = _train(train, _lincs_setup(), config, seed, input_type="log2")
    ctrl_mask = (obs[key] == LINCS["control"]).to_numpy()
    source = adata[ctrl_mask]
    control = model.log_expression(source)
    tobs = train.obs
    perturbed = (tobs[key] != LINCS["control"]).to_numpy()
    train_mean = _mean(model, train, perturbed)
    rows, predict_s = [], 0.0
    for drug in sorted(set(obs[key]) - {LINCS["control"]}):
        mine = (tobs[key] == drug).to_numpy()
        doses = sorted(set(tobs[dkey][mine]))
        if len(doses) < 2:
            continue
        means = [_mean(model, train, mine & (tobs[dkey] == d).to_numpy()) for d in doses]
        for fold, held_doses in folds.items():
            for dose in held_doses:
                real_mask = ((obs[key] == drug) & (obs[dkey] == dose)).to_numpy()
                if not real_mask.any():
                    continue
                real = model.log_expression(adata[real_mask])
                pred, seconds = _predict(model, source, {key: drug, dkey: dose}, config, seed)
                predict_s += seconds
                shift = control.mean(0)
                preds = {
                    "rnadiff (counterfactual)": pred,
                    "baseline: nearest measured dose": _nearest_dose(doses, means, dose),
                    "baseline: linear in log dose": _log_interp(doses, means, dose),
                    "baseline: train mean": train_mean,
                }
                preds = {m: p if p.ndim == 2 else control + (p - shift) for m, p in preds.items()}
                rows += _scores("lincs_dose", fold, seed, f"{drug}@{dose:g}", preds, real, control)
    return pd.DataFrame(rows), _timings(train_s, predict_s)


def _tanimoto(smiles: dict, a: list[str], b: list[str]) -> np.ndarray:
    """Tanimoto similarity of the Morgan fingerprints of drugs ``a`` x drugs ``b``."""
    return tanimoto_matrix(fingerprints(smiles, a), fingerprints(smiles, b))


def _unseen_split(drugs: list[str], seed: int, fraction: float = 0.2) -> list[str]:
    rng = np.random.default_rng(1000 + seed)
    n = max(1, round(fraction * len(drugs)))
    return sorted(rng.choice(sorted(drugs), size=n, replace=False).tolist())


def _unseen_drug_rows(
    task, seed, config, adata, setup, *, key, dkey, control_name, context_keys=(), input_type=None,
    rank_task=None, oracle=None,
):  # fmt: skip
    """Held-out drugs predicted from SMILES, with train-mean and Tanimoto-nearest baselines;
    optionally the ranking task on the same model."""
    obs = adata.obs
    smiles = smiles_table(obs, key, control_name)
    drugs = sorted(set(obs[key].astype(str)) - {control_name})
    # held out: drugs with a structure; the others always train (a learned vector each)
    held_drugs = _unseen_split(sorted(smiles), seed)
    train_drugs = [d for d in drugs if d not in held_drugs]
    held = obs[key].isin(held_drugs).to_numpy()
    train = adata[~held]
    model, train_s = _train(train, setup, config, seed, input_type=input_type)
    model.add_molecules({d: smiles[d] for d in held_drugs})  # what a user does for new drugs
    with_structure = [d for d in train_drugs if d in smiles]
    sim = _tanimoto(smiles, held_drugs, with_structure)
    nearest = {d: with_structure[int(np.argmax(sim[i]))] for i, d in enumerate(held_drugs)}
    contexts = (
        obs[list(context_keys)].drop_duplicates().to_dict("records") if context_keys else [{}]
    )
    tobs = train.obs
    rows, rank_rows, predict_s = [], [], 0.0

    def where(frame, **values):
        mask = np.ones(len(frame), dtype=bool)
        for k, v in values.items():
            mask &= (
                (frame[k].astype(str) == str(v)).to_numpy()
                if k != dkey
                else (frame[k] == v).to_numpy()
            )
        return mask

    for ctx in contexts:
        source = adata[where(obs, **{key: control_name}, **ctx)]
        control = model.log_expression(source)
        shift = control.mean(0)
        for dose in sorted(set(obs[dkey][held])):
            train_at = where(tobs, **ctx) & (tobs[dkey] == dose).to_numpy()
            perturbed = train_at & (tobs[key].astype(str) != control_name).to_numpy()
            if not perturbed.any():
                continue
            train_mean = _mean(model, train, perturbed)
            signatures = {
                d: _mean(model, train, train_at & (tobs[key].astype(str) == d).to_numpy()) - shift
                for d in train_drugs
                if (train_at & (tobs[key].astype(str) == d).to_numpy()).any()
            }
            for drug in held_drugs:
                real_mask = where(obs, **{key: drug}, **ctx) & (obs[dkey] == dose).to_numpy()
                if not real_mask.any():
                    continue
                real = model.log_expression(adata[real_mask])
                pred, seconds = _predict(model, source, {key: drug, dkey: dose}, config, seed)
                predict_s += seconds
                near = nearest[drug]
                preds = {
                    "rnadiff (counterfactual)": pred,
                    "baseline: train mean at dose": train_mean,
                    "baseline: nearest training drug (Tanimoto)": (
                        shift + signatures[near] if near in signatures else train_mean
                    ),
                }
                if oracle is not None:  # a simulation: the true condition's fresh cells
                    preds[ORACLE] = oracle(model, ctx, drug, dose)
                preds = {m: p if p.ndim == 2 else control + (p - shift) for m, p in preds.items()}
                label = "/".join(str(v) for v in ctx.values())
                evaluation = f"{label + ':' if label else ''}{drug}@{dose:g}"
                rows += _scores(task, "held-out drugs", seed, evaluation, preds, real, control)
                if rank_task is not None and dose == max(obs[dkey][held]):
                    rank_rows += _rank_rows(
                        rank_task, seed, model, adata[real_mask], source, drug, dose,
                        signatures, smiles, held_drugs, train_drugs, key, dkey, ctx,
                    )  # fmt: skip
    return rows, rank_rows, _timings(train_s, predict_s)


def _rank_rows(
    task, seed, model, target, reference, drug, dose, signatures, smiles, held, train_drugs,
    key, dkey, ctx,
):  # fmt: skip
    """Rank every drug (held-out ones by SMILES) for ``drug``'s measured change."""
    candidates = {d: smiles[d] for d in sorted(set(held) | set(train_drugs)) if d in smiles}
    ranked = model.rank_perturbations(
        target, candidates=candidates, context={dkey: dose, **ctx}, reference=reference,
        seed=seed, progress=False,
    )  # fmt: skip
    at = ranked.set_index("perturbation")
    ranks = {
        "rnadiff (combined)": int(at.loc[drug, "rank"]),
        "rnadiff (likelihood)": int(at.loc[drug, "rank_likelihood_score"]),
        "rnadiff (generation)": int(at.loc[drug, "rank_phenotype_score"]),
    }
    change = model.log_expression(target).mean(0) - model.log_expression(reference).mean(0)
    mean_sig = np.mean(list(signatures.values()), axis=0)
    names = list(candidates)
    unseen = [d for d in names if d not in signatures]
    trained = [d for d in signatures if d in smiles]
    sim = _tanimoto(smiles, unseen, trained)
    knn_sig = {d: signatures[trained[int(np.argmax(sim[i]))]] for i, d in enumerate(unseen)}
    for method, fill in (
        ("baseline: Tanimoto-kNN", knn_sig),
        ("baseline: cosine to training signatures", dict.fromkeys(unseen, mean_sig)),
    ):
        score = pd.Series({d: cosine(signatures.get(d, fill.get(d)), change) for d in names})
        ranks[method] = float(score.rank(ascending=False, method="average")[drug])
    rows = []
    label = "/".join(str(v) for v in ctx.values())
    evaluation = f"{label + ':' if label else ''}{drug}@{dose:g}"
    for method, r in ranks.items():
        rows += [
            _row(task, "held-out drugs", seed, evaluation, method, m, v)
            for m, v in ranking_metrics([r]).items()
        ]
        rows.append(_row(task, "held-out drugs", seed, evaluation, method, "rank", r))
    for m, v in random_ranking_metrics(len(names)).items():
        rows.append(_row(task, "held-out drugs", seed, evaluation, "baseline: random", m, v))
    return rows


_LINCS_UNSEEN_CACHE: dict = {}


def _lincs_unseen(seed: int, config):
    if seed not in _LINCS_UNSEEN_CACHE:
        adata = _lincs()
        _LINCS_UNSEEN_CACHE[seed] = _unseen_drug_rows(
            "lincs_unseen_drug", seed, config, adata, _lincs_setup(), key=LINCS["key"],
            dkey=LINCS["dose"], control_name=LINCS["control"], input_type="log2",
            rank_task="lincs_drug_rank",
        )  # fmt: skip
    return _LINCS_UNSEEN_CACHE[seed]


@register_standalone("lincs_unseen_drug")
def lincs_unseen_drug(seed: int, config):
    """Drugs never measured, predicted from their structure (see the module doc)."""
    rows, _, times = _lincs_unseen(seed, config)
    return pd.DataFrame(rows), times


@register_standalone("lincs_drug_rank")
def lincs_drug_rank(seed: int, config):
    """Rank drugs, held-out ones by structure, for a held-out drug's change (module doc)."""
    _, rank_rows, times = _lincs_unseen(seed, config)
    return pd.DataFrame(rank_rows), times.assign(predict_s=np.nan)


# ---------------------------------------------------------------- simulator

SIM = dict(n_genes=300, n_cell_types=2)


def _sim(seed: int, n_cells: int, **options):
    from rnadiff.datasets import simulate

    return simulate(n_cells, seed=seed, **(SIM | options))


def sim_dose_world(seed: int):
    """``sim_dose``'s simulated world: 8 drugs x 5 doses (0.1-10 uM), 2 cell types, 24 h."""
    return _sim(
        seed, 9000, n_genetic=0, n_combinations=0, n_drugs=8, times=(24.0,),
        doses=(0.1, 0.3, 1.0, 3.0, 10.0),
    )  # fmt: skip


def sim_drug_world(seed: int):
    """``sim_unseen_drug``'s simulated world: 30 drugs at 1 and 10 uM, one cell type, 24 h."""
    return _sim(
        seed, 9000, n_genetic=0, n_combinations=0, n_drugs=30, times=(24.0,),
        doses=(1.0, 10.0), n_cell_types=1,
    )  # fmt: skip


def smiles_table(obs: pd.DataFrame, key: str, control: str) -> dict[str, str]:
    """``{drug: SMILES}`` of the perturbations in ``obs`` with a structure (not the control)."""
    pairs = zip(obs[key].astype(str), obs["smiles"].astype(str), strict=True)
    return {k: v for k, v in pairs if v.strip() and v != "nan" and k != control}


def _sim_setup(**extra) -> dict:
    return dict(
        perturbation_key="perturbation", control="control", cell_type_key="cell_type",
        dose_key="dose", smiles_key="smiles",
    ) | extra  # fmt: skip


def dose_cases(adata, train, model: RNADiffusion, folds: dict[str, float]):
    """``sim_dose``'s held-out cases, one dict per (cell type, drug, fold): the cell type's
    control cells (``source``) and their log expression (``control``), the training mean of its
    perturbed cells, the drug's measured doses and their training means, the fold's held-out
    dose and its real cells' log expression (``real``)."""
    obs, tobs = adata.obs, train.obs
    perturbed = (obs.perturbation != "control").to_numpy()
    for ct in sorted(set(obs.cell_type)):
        in_ct = (obs.cell_type == ct).to_numpy()
        source = adata[in_ct & ~perturbed]
        control = model.log_expression(source)
        t_ct = (tobs.cell_type == ct).to_numpy()
        t_pert = t_ct & (tobs.perturbation != "control").to_numpy()
        train_mean = _mean(model, train, t_pert)
        for drug in sorted(set(obs.perturbation[perturbed])):
            mine = t_ct & (tobs.perturbation == drug).to_numpy()
            doses = sorted(set(tobs.dose[mine]))
            means = [_mean(model, train, mine & (tobs.dose == d).to_numpy()) for d in doses]
            for fold, dose in folds.items():
                real_mask = in_ct & (obs.perturbation == drug).to_numpy()
                real_mask &= (obs.dose == dose).to_numpy()
                real = model.log_expression(adata[real_mask])
                yield dict(
                    cell_type=ct, drug=drug, fold=fold, dose=dose, source=source, control=control,
                    train_mean=train_mean, doses=doses, means=means, real=real,
                )  # fmt: skip


DOSE_FOLDS = {"interpolation": 1.0, "extrapolation": 10.0}  # sim_dose's held-out doses


def dose_split(world: int, config):
    """``sim_dose``'s world ``world`` with every drug's held-out doses (:data:`DOSE_FOLDS`) left
    out, and rnadiff trained on the rest as the task trains it: ``(adata, truth, train, model,
    train_s)``."""
    adata, truth = sim_dose_world(world)
    obs = adata.obs
    perturbed = (obs.perturbation != "control").to_numpy()
    held = perturbed & obs.dose.isin(list(DOSE_FOLDS.values())).to_numpy()
    train = adata[~held]
    model, train_s = _train(train, _sim_setup(), config, world)
    return adata, truth, train, model, train_s


@register_standalone("sim_dose")
def sim_dose(seed: int, config):
    """Held-out doses on the simulator (see the module doc)."""
    adata, truth, train, model, train_s = dose_split(seed, config)
    rows, predict_s = [], 0.0
    for case in dose_cases(adata, train, model, DOSE_FOLDS):
        ct, drug, dose, control = case["cell_type"], case["drug"], case["dose"], case["control"]
        doses, means = case["doses"], case["means"]
        t0 = time.perf_counter()
        pred = model.predict(
            case["source"], target={"perturbation": drug, "dose": dose},
            steps=config.sampler_steps, seed=seed, progress=False,
        )  # fmt: skip
        predict_s += time.perf_counter() - t0
        preds = {
            "rnadiff (counterfactual)": model.log_expression(pred),
            "baseline: nearest measured dose": _nearest_dose(doses, means, dose),
            "baseline: linear in log dose": _log_interp(doses, means, dose),
            "baseline: train mean": case["train_mean"],
            ORACLE: _oracle(model, truth, ct, drug, dose, seed),
        }
        shift = control.mean(0)
        preds = {m: p if p.ndim == 2 else control + (p - shift) for m, p in preds.items()}
        ev = f"{ct}:{drug}@{dose:g}"
        rows += _scores("sim_dose", case["fold"], seed, ev, preds, case["real"], control)
    return pd.DataFrame(rows), _timings(train_s, predict_s)


@register_standalone("sim_combo")
def sim_combo(seed: int, config):
    """Held-out pairs from their singles, with and without interactions (module doc)."""
    rows, train_total, predict_s = [], 0.0, 0.0
    folds = (
        ("additive truth", 0.0, False),
        ("with interactions", 1.0, False),
        ("with interactions, pair measured in the other type", 1.0, True),
    )
    for fold, interaction, elsewhere in folds:
        adata, truth = _sim(
            seed, 9000, n_genetic=4, n_drugs=4, n_combinations=6, times=(24.0,),
            doses=(10.0,), interaction=interaction,
        )  # fmt: skip
        obs = adata.obs
        types = sorted(set(obs.cell_type))
        perts = obs.perturbation.astype(str)
        pair = perts.str.contains("+", regex=False).to_numpy()
        combos = sorted(set(perts[pair]))
        # where each pair is measured (this fold: in one type, alternating; else nowhere)
        measured_in = {
            c: types[i % len(types)] if elsewhere else None for i, c in enumerate(combos)
        }
        held = pair & np.array(
            [measured_in.get(p) != t for p, t in zip(perts, obs.cell_type, strict=True)]
        )
        train = adata[~held]
        model, train_s = _train(train, _sim_setup(), config, seed)
        train_total += train_s
        tobs = train.obs
        for ct in types:
            in_ct = (obs.cell_type == ct).to_numpy()
            source = adata[in_ct & (obs.perturbation == "control").to_numpy()]
            control = model.log_expression(source)
            shift = control.mean(0)
            t_ct = (tobs.cell_type == ct).to_numpy()
            for combo in combos:
                if measured_in[combo] == ct:
                    continue
                a, b = combo.split("+")
                real_mask = in_ct & (obs.perturbation == combo).to_numpy()
                real = model.log_expression(adata[real_mask])
                row = obs[real_mask].iloc[0]
                target = {"perturbation": combo, "dose": row.dose}
                t0 = time.perf_counter()
                pred = model.predict(
                    source, target=target, steps=config.sampler_steps, seed=seed, progress=False
                )
                predict_s += time.perf_counter() - t0
                singles = [
                    _mean(model, train, t_ct & (tobs.perturbation == p).to_numpy()) - shift
                    for p in (a, b)
                ]
                preds = {
                    "rnadiff (counterfactual)": model.log_expression(pred),
                    "baseline: additive": control + singles[0] + singles[1],
                    ORACLE: _oracle(model, truth, ct, combo, row.dose, seed),
                }
                if elsewhere:  # the pair's shift where it was measured; its interaction there
                    o_ct = (tobs.cell_type == measured_in[combo]).to_numpy()
                    there = {
                        p: _mean(model, train, o_ct & (tobs.perturbation == p).to_numpy())
                        for p in ("control", a, b, combo)
                    }
                    pair_there = there[combo] - there["control"]
                    preds["baseline: nearest-context additive"] = control + pair_there
                    preds["baseline: additive + interaction measured elsewhere"] = (
                        preds["baseline: additive"]
                        + pair_there
                        - (there[a] - there["control"])
                        - (there[b] - there["control"])
                    )
                rows += _scores("sim_combo", fold, seed, f"{ct}:{combo}", preds, real, control)
    return pd.DataFrame(rows), _timings(train_total, predict_s)


@register_standalone("sim_unseen_drug")
def sim_unseen_drug(seed: int, config):
    """Drugs never measured on the simulator, predicted from SMILES (module doc)."""
    adata, truth = sim_drug_world(seed)

    def oracle(model, ctx, drug, dose):
        return _oracle(model, truth, ctx["cell_type"], drug, dose, seed)

    rows, _, times = _unseen_drug_rows(
        "sim_unseen_drug", seed, config, adata, _sim_setup(), key="perturbation", dkey="dose",
        control_name="control", context_keys=("cell_type",), oracle=oracle,
    )  # fmt: skip
    return pd.DataFrame(rows), times


def _classified(clf: StateClassifier, model: RNADiffusion, cells) -> pd.Series:
    """The state composition of ``cells`` as :func:`rnadiff.fate.predict_fate` reports it:
    classified, adjusted for the classifier's cross-validated confusion."""
    labels = clf.predict(model.log_expression(cells))
    return composition(labels, clf.states_, confusion=clf.confusion_, n_boot=0)["proportion"]


def fate_world(seed: int, config):
    """``sim_fate``'s world and split: the data, its truth, the perturbed and held-out cells
    (every drug's 48 h) and rnadiff trained on the rest as the task trains it (and seconds)."""
    adata, truth = _sim(
        seed, 9000, n_genetic=0, n_combinations=0, n_drugs=4, n_cell_types=1,
        times=(0.0, 24.0, 48.0, 72.0), doses=(10.0,),
    )  # fmt: skip
    obs = adata.obs
    perturbed = (obs.perturbation != "control").to_numpy()
    held = perturbed & (obs.time == 48.0).to_numpy()
    model, train_s = _train(adata[~held], _sim_setup(time_key="time"), config, seed)
    return adata, truth, perturbed, held, model, train_s


@register_standalone("sim_fate")
def sim_fate(seed: int, config):
    """State composition at a held-out time on the simulator (module doc)."""
    adata, truth, perturbed, held, model, train_s = fate_world(seed, config)
    obs = adata.obs
    train = adata[~held]
    tobs = train.obs
    clf = StateClassifier(seed=seed).fit(model.log_expression(train), tobs.state.astype(str))
    states = clf.states_
    rows, predict_s = [], 0.0
    source = adata[(~perturbed & (obs.time == 48.0)).to_numpy()]
    for drug in sorted(set(obs.perturbation[perturbed])):
        real_mask = held & (obs.perturbation == drug).to_numpy()
        real_states = obs.state[real_mask].astype(str)

        def measured(t, drug=drug):
            m = ((tobs.perturbation == drug) & (tobs.time == t)).to_numpy()
            return composition(tobs.state[m].astype(str), states, n_boot=0)["proportion"]

        cell_type = str(obs.cell_type[real_mask].iloc[0])
        t0 = time.perf_counter()
        pred = model.predict(
            source, target={"perturbation": drug, "dose": 10.0, "time": 48.0},
            steps=config.sampler_steps, seed=seed, progress=False,
        )  # fmt: skip
        predict_s += time.perf_counter() - t0
        true = truth.composition(cell_type, drug, time=48.0, dose=10.0).reindex(states)
        real = composition(real_states, states, n_boot=0)["proportion"]
        gen = model.generate(
            {"perturbation": drug, "dose": 10.0, "time": 48.0, "cell_type": cell_type},
            n_cells=int(real_mask.sum()), steps=config.sampler_steps, seed=seed, progress=False,
        )  # fmt: skip
        comps = {
            "rnadiff (counterfactual)": _classified(clf, model, pred),
            "rnadiff (generation)": _classified(clf, model, gen),
            "baseline: nearest time (24 h)": measured(24.0),
            "baseline: linear in time (24-72 h)": (measured(24.0) + measured(72.0)) / 2,
            "classifier on the real cells": _classified(clf, model, adata[real_mask]),
        }
        for method, comp in comps.items():
            rows.append(
                _row("sim_fate", "48h", seed, drug, method, "composition_error",
                     composition_error(comp, real))
            )  # fmt: skip
            rows.append(
                _row("sim_fate", "48h", seed, drug, method, "composition_error_truth",
                     composition_error(comp, true))
            )  # fmt: skip
    rows.append(_row("sim_fate", "48h", seed, "all", "classifier", "cv_accuracy", clf.cv_accuracy_))
    return pd.DataFrame(rows), _timings(train_s, predict_s)


def hsmm_fate_rows(split, prep, model: RNADiffusion) -> list[dict]:
    """``hsmm_fate``: the state composition of the predicted 48 h cells (module doc)."""
    (ev,) = split.evaluations
    train = split.train
    if "State" not in train.obs:
        raise ValueError("the HSMM file has no State column")
    hours = pd.to_numeric(train.obs["Hours"]).to_numpy()
    labelled = train.obs["State"].notna().to_numpy()
    clf = StateClassifier(seed=split.seed).fit(
        model.log_expression(train[labelled]), train.obs["State"][labelled].astype(str)
    )
    states = clf.states_

    def at(t):
        m = labelled & (hours == t)
        return composition(train.obs["State"][m].astype(str), states, n_boot=0)["proportion"]

    pred = model.predict(ev.source, target=ev.target, seed=split.seed, progress=False)
    gen = model.generate(ev.condition, n_cells=ev.real.n_obs, seed=split.seed, progress=False)
    real_labels = ev.real.obs["State"].dropna().astype(str)
    real = composition(real_labels, states, n_boot=0)["proportion"]
    comps = {
        "rnadiff (counterfactual)": _classified(clf, model, pred),
        "rnadiff (generation)": _classified(clf, model, gen),
        "baseline: nearest time (24 h)": at(24.0),
        "baseline: nearest time (72 h)": at(72.0),
        "baseline: linear in time (24-72 h)": (at(24.0) + at(72.0)) / 2,
        "classifier on the real cells": _classified(clf, model, ev.real),
    }
    rows = [
        _row("hsmm_fate", split.fold, split.seed, ev.name, method, "composition_error",
             composition_error(comp, real))
        for method, comp in comps.items()
    ]  # fmt: skip
    rows.append(
        _row("hsmm_fate", split.fold, split.seed, ev.name, "classifier", "cv_accuracy",
             clf.cv_accuracy_)
    )  # fmt: skip
    return rows


# hsmm_fate runs on the model trained for hsmm_time
EXTRA_TASKS["hsmm_fate"] = ("hsmm_time", hsmm_fate_rows)
