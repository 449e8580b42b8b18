"""The benchmark: every method on the same splits and genes, scored by the same metrics.

Each split is preprocessed once from its training cells (modelled genes, size factors);
rnadiff preprocesses its own training cells with the same settings (and so models the same
genes), peers receive those genes. Every method is scored on every gene of the data: genes a
method does not model pass through from the source cells, so a responder left out of the
model costs score.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from rnadiff._config import ModelConfig, PreprocessConfig, TrainConfig
from rnadiff.data._preprocessing import PreprocessState, fit_preprocessing, log_expression
from rnadiff.data._splits import Evaluation, Split
from rnadiff.evaluation._baselines import (
    additive_baseline,
    control_baseline,
    linear_baseline,
    nearest_context_additive_baseline,
    train_mean_baseline,
)
from rnadiff.evaluation._metrics import (
    discrimination_score,
    response_metrics,
    target_gene_columns,
)
from rnadiff.model import RNADiffusion

Predictions = dict[str, dict[str, np.ndarray]]  # evaluation -> method -> cells x genes


class PeerNotRun(RuntimeError):
    """A peer that does not apply to a split (e.g. a gene-perturbation model on a cytokine);
    reported as "not run" with the reason, not as a failure."""


@dataclass(frozen=True)
class BenchConfig:
    """What the benchmark trains and how: rnadiff's defaults unless changed here."""

    max_steps: int | None = None  # exact rnadiff training steps per split (None: TrainConfig's)
    sampler_steps: int = 20  # DPM-Solver++(2M), the default sampler
    n_top_genes: int | None = PreprocessConfig().n_top_genes  # genes modelled at most
    distributional: bool = True  # E-distance, MMD, kNN AUC, DE overlap (slower)
    model: ModelConfig | None = None  # None: ModelConfig() with n_top_genes
    train: TrainConfig | None = None  # None: TrainConfig() (max_steps and seed set per split)

    def model_config(self) -> ModelConfig:
        base = self.model or ModelConfig()
        return dataclasses.replace(
            base, preprocess=dataclasses.replace(base.preprocess, n_top_genes=self.n_top_genes)
        )

    def train_config(self, seed: int) -> TrainConfig:
        base = self.train or TrainConfig()
        if self.max_steps is None:
            return dataclasses.replace(base, seed=seed)
        return dataclasses.replace(base, max_steps=self.max_steps, epochs=None, seed=seed)


@dataclass
class Prepared:
    """A split's shared preprocessing and log-normalized populations of every gene."""

    state: PreprocessState
    train: np.ndarray
    evaluations: dict[str, dict[str, np.ndarray]]  # name -> source/real/control

    @property
    def genes(self) -> list[str]:
        """Every gene of the data, the order of the populations (and of the scores)."""
        return list(self.state.all_genes)

    @property
    def modelled(self) -> np.ndarray:
        """Positions of the modelled genes among :attr:`genes`."""
        return pd.Index(self.genes).get_indexer(list(self.state.genes))


def prepare(split: Split, config: BenchConfig) -> Prepared:
    """The split's shared preprocessing (fitted on its training cells with the benchmark's
    model configuration) and the log-normalized populations of every gene: training cells,
    and each evaluation's source, real and control cells."""
    state = fit_preprocessing(split.train, config=config.model_config().preprocess)
    genes = list(state.all_genes)
    pops = {}
    for ev in split.evaluations:
        source = log_expression(ev.source, state, genes=genes)
        # the control is usually the source itself (Kang, HSMM): normalize it once
        control = (
            source if ev.control is ev.source else log_expression(ev.control, state, genes=genes)
        )
        pops[ev.name] = {
            "source": source,
            "real": log_expression(ev.real, state, genes=genes),
            "control": control,
        }
    return Prepared(state, log_expression(split.train, state, genes=genes), pops)


def _group_means(x: np.ndarray, obs: pd.DataFrame, keys: list[str]) -> dict[tuple, np.ndarray]:
    groups = obs[keys].astype(str).agg("\x1f".join, axis=1).to_numpy()
    return {tuple(g.split("\x1f")): x[groups == g].mean(axis=0) for g in np.unique(groups)}


def baseline_predictions(split: Split, prep: Prepared) -> Predictions:
    """Control, additive, nearest-context additive (:func:`nearest_context_predictions`),
    linear (ridge) and train-mean baselines for every evaluation.

    A baseline that cannot predict a target (e.g. a perturbation never seen in training) is
    left out of that evaluation and reported as missing.
    """
    obs = split.train.obs
    pkey, control = split.setup.get("perturbation_key"), split.setup.get("control")
    ctx_key = split.setup.get("cell_type_key")
    out: Predictions = {}
    for ev in split.evaluations:
        src, n_real = prep.evaluations[ev.name]["source"], ev.real.n_obs
        preds = {"baseline: control": control_baseline(src)}
        if pkey is not None:
            target = str(ev.target[pkey])
            keys = [pkey, ctx_key] if ctx_key else [pkey]
            means = _group_means(prep.train, obs, keys)
            contexts = {k[1:] for k in means}
            shifts = [
                means[(target, *c)] - means[(control, *c)]
                for c in sorted(contexts)
                if (target, *c) in means and (control, *c) in means
            ]
            if shifts:
                preds["baseline: additive"] = additive_baseline(src, shifts)
                preds.update(nearest_context_predictions(split, prep, ev))
                bulks = {(p, c[0] if c else "train"): m for (p, *c), m in means.items()}
                context = str(ev.condition.get(ctx_key, "held-out")) if ctx_key else "held-out"
                preds["baseline: linear (ridge)"] = linear_baseline(
                    src, bulks, target=(target, context), control=control
                )
            perturbed = obs[pkey].astype(str).to_numpy() != control
            preds["baseline: train mean"] = train_mean_baseline(
                prep.train[perturbed], n_real, seed=split.seed
            )
        else:  # a continuous target (time): interpolate the training means linearly
            ((tkey, value),) = ev.target.items()
            t = pd.to_numeric(obs[tkey]).to_numpy()
            points = np.array(sorted(set(t)))
            lo, hi = points[points < value].max(), points[points > value].min()
            mean_at = {p: prep.train[t == p].mean(axis=0) for p in (lo, hi)}
            interp = mean_at[lo] + (value - lo) / (hi - lo) * (mean_at[hi] - mean_at[lo])
            preds["baseline: additive"] = additive_baseline(src, [interp - src.mean(axis=0)])
            preds["baseline: train mean"] = train_mean_baseline(prep.train, n_real, seed=split.seed)
        out[ev.name] = preds
    return out


# the nearest-context additive baseline, by how "nearest" is measured (see
# nearest_context_predictions)
NEAREST_CONTEXT = {
    "sqeuclidean": "baseline: nearest-context additive",
    "correlation": "baseline: nearest-context additive (correlation)",
}


def context_keys(setup: dict) -> list[str]:
    """The categorical covariates besides the perturbation that make a cell's context (as
    rnadiff's ``compose`` transfer takes them): cell type, batch and other categorical keys."""
    keys = [setup.get("cell_type_key"), setup.get("batch_key"), *setup.get("categorical_keys", ())]
    return [k for k in keys if k]


def nearest_context_predictions(split: Split, prep: Prepared, ev: Evaluation) -> Predictions:
    """The nearest-context additive baseline of one evaluation, both definitions of nearest.

    Each source cell's context (:func:`context_keys`) gets the shift ``mean(target) -
    mean(control)`` of the training context (with both) whose mean control profile is nearest
    to its own context's (its training control cells, else its source cells):

    * ``"baseline: nearest-context additive"``: rnadiff's nearest (squared Euclidean distance
      in the model's space, i.e. log values of the modelled genes centred and scaled by the
      split's preprocessing, as the ``compose`` transfer compares the model's control
      profiles);
    * ``"baseline: nearest-context additive (correlation)"``: the largest Pearson correlation
      of mean log values of the modelled genes.

    A context where the target was measured in training is its own nearest. Empty when the
    split has no context covariates or the target was measured in no context.
    """
    pkey, control = split.setup.get("perturbation_key"), split.setup.get("control")
    keys = context_keys(split.setup)
    if pkey is None or not keys or pkey not in ev.target:
        return {}
    target = str(ev.target[pkey])
    means = _group_means(prep.train, split.train.obs, [pkey, *keys])
    controls = {tuple(c): m for (p, *c), m in means.items() if p == control}
    shifts = {
        tuple(c): m - controls[tuple(c)]
        for (p, *c), m in means.items()
        if p == target and tuple(c) in controls
    }
    if not shifts:
        return {}
    cols, state = prep.modelled, prep.state

    def spaces(x: np.ndarray) -> dict[str, np.ndarray]:  # the profile each distance compares
        logx = x[..., cols]
        return {"sqeuclidean": (logx - state.mean) / state.std, "correlation": logx}

    src = prep.evaluations[ev.name]["source"]
    missing = [k for k in keys if k not in ev.source.obs]
    if missing:
        raise ValueError(f"{ev.name}: source cells lack the context columns {missing}")
    own = ev.source.obs[keys].astype(str).agg("\x1f".join, axis=1).to_numpy()
    out = {name: np.empty_like(src, dtype=np.float32) for name in NEAREST_CONTEXT.values()}
    for value in np.unique(own):
        ctx, cells = tuple(value.split("\x1f")), own == value
        profile = controls.get(ctx, src[cells].mean(axis=0))
        for by, name in NEAREST_CONTEXT.items():
            out[name][cells] = nearest_context_additive_baseline(
                src[cells],
                shifts,
                {c: spaces(controls[c])[by] for c in shifts},
                profile=spaces(profile)[by],
                by=by,
            )
    return out


def unpredictable(split: Split, *, gene_prior: bool = True) -> list[str]:
    """Evaluations whose target perturbation (or a part of it) never occurs in training and,
    with ``gene_prior``, is not a gene of the training data either (no expression prior)."""
    key, sep = split.setup.get("perturbation_key"), split.setup.get("combination_sep", "+")
    if key is None:
        return []
    known = {p for v in split.train.obs[key].astype(str).unique() for p in v.split(sep)}
    if gene_prior:
        known |= set(split.train.var_names)
    return [
        ev.name
        for ev in split.evaluations
        if key in ev.target and not set(str(ev.target[key]).split(sep)) <= known
    ]


def rnadiff_predictions(
    split: Split, config: BenchConfig, *, progress: bool = False
) -> tuple[Predictions, dict, RNADiffusion | None]:
    """Train rnadiff on the split and predict every evaluation (counterfactual, generation).

    Perturbations never seen in training are predicted with the gene expression prior
    (``prior=True``) when their target is one of the model's genes. When no evaluation can be
    predicted, nothing is trained: the timing says so and the model is ``None``.
    """
    missing = unpredictable(split)
    if missing and len(missing) == len(split.evaluations):
        note = (
            f"cannot predict perturbations never seen in training that are not genes of the "
            f"data (no expression prior): {missing}"
        )
        return {}, {"train_s": 0.0, "predict_s": 0.0, "note": note}, None
    train = split.train.copy()
    t0 = time.perf_counter()  # training time includes building the model (preprocessing, prior)
    RNADiffusion.setup_anndata(train, **split.setup)
    model = RNADiffusion(train, config=config.model_config(), seed=split.seed)
    # effect calibration also serves unseen perturbations: their prior mixes the seen ones'
    # calibrated scales
    model.train(config=config.train_config(split.seed), progress=progress)
    timing = {"train_s": time.perf_counter() - t0, "predict_s": 0.0}
    out: Predictions = {}
    # perturbations never seen in training are predicted from the expression prior
    kw = dict(steps=config.sampler_steps, seed=split.seed, progress=False, prior=True)
    for ev in split.evaluations:
        t0 = time.perf_counter()
        genes = list(model.preprocess.all_genes)
        try:
            cf = model.predict(ev.source, target=ev.target, **kw)[:, genes].X
            gen = model.generate(ev.condition, n_cells=ev.real.n_obs, **kw)[:, genes].X
        except ValueError:  # e.g. a perturbation the model never saw: it says it cannot
            out[ev.name] = {}
            continue
        timing["predict_s"] += time.perf_counter() - t0
        out[ev.name] = {"rnadiff (counterfactual)": cf, "rnadiff (generation)": gen}
    return out, timing, model


PREDICTIONS_FORMAT = 1


def save_predictions(
    path: str | Path, split: Split, index: int, genes: list[str], predictions: Predictions
) -> Path:
    """Write every method's predicted cells of one split to ``path`` (``.npz``, no pickle).

    With them a split can be scored again (:func:`load_predictions`, :func:`score_split`), e.g.
    after a change to the metrics, without training rnadiff or the peers again. ``index`` is the
    split's position among its task's splits of that seed, so it can be rebuilt. Written
    atomically (a temporary file, then renamed).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays, entries = {}, []
    for ev_name, preds in predictions.items():
        for method, x in preds.items():
            key = f"p{len(entries)}"
            arrays[key] = np.asarray(x)  # as predicted (rescoring gives the same numbers)
            entries.append({"key": key, "evaluation": ev_name, "method": method})
    meta = {
        "format": PREDICTIONS_FORMAT,
        "task": split.task,
        "fold": str(split.fold),
        "seed": int(split.seed),
        "index": int(index),
        "genes": list(genes),
        "entries": entries,
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_predictions(path: str | Path) -> tuple[dict, Predictions]:
    """Read a file of :func:`save_predictions`: ``(meta, predictions)``; ``meta`` has the
    ``task``, ``fold``, ``seed``, split ``index`` and ``genes``."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(data["meta"].tobytes().decode())
        if meta.get("format") != PREDICTIONS_FORMAT:
            raise ValueError(f"{path}: unknown predictions format {meta.get('format')!r}")
        out: Predictions = {}
        for entry in meta["entries"]:
            out.setdefault(entry["evaluation"], {})[entry["method"]] = data[entry["key"]]
    return meta, out


def score_split(
    split: Split, prep: Prepared, predictions: Predictions, config: BenchConfig
) -> pd.DataFrame:
    """Tidy rows ``task, fold, seed, evaluation, method, metric, value``."""
    rows = []
    for ev in split.evaluations:
        pops = prep.evaluations[ev.name]
        for method, pred in predictions.get(ev.name, {}).items():
            metrics = response_metrics(
                pred,
                pops["real"],
                pops["control"],
                top_n=(20, 100),
                distributional=config.distributional,
                seed=split.seed,
            )
            rows += [_row(split, ev, method, k, v) for k, v in metrics.items()]
    if len(split.evaluations) > 1:  # which real condition does each prediction look like?
        methods = {m for preds in predictions.values() for m in preds}
        real = {ev.name: prep.evaluations[ev.name]["real"] for ev in split.evaluations}
        control = prep.evaluations[split.evaluations[0].name]["control"]
        exclude = target_gene_indices(split, prep.genes)
        for method in sorted(methods):
            pred = {e: p[method] for e, p in predictions.items() if method in p}
            if len(pred) == len(real):
                # as cell-eval: a knock-out's own target genes are left out of its comparison
                per, _ = discrimination_score(pred, real, control, exclude=exclude)
                every, _ = discrimination_score(pred, real, control)
                for ev in split.evaluations:
                    rows.append(_row(split, ev, method, "discrimination", per[ev.name]))
                    rows.append(_row(split, ev, method, "discrimination_all_genes", every[ev.name]))
    return pd.DataFrame(rows)


def target_gene_indices(split: Split, genes: Sequence[str]) -> dict[str, list[int]]:
    """Per evaluation, the positions in ``genes`` of its perturbation's target genes (the parts
    of a combination ``A+B`` that are genes); evaluations without any get none."""
    key, sep = split.setup.get("perturbation_key"), split.setup.get("combination_sep", "+")
    labels = {
        ev.name: str(ev.target[key])
        for ev in split.evaluations
        if key is not None and key in ev.target
    }
    columns = target_gene_columns(list(labels.values()), genes, sep=sep)
    return {name: columns[label] for name, label in labels.items() if columns[label]}


def _row(split: Split, ev: Evaluation, method: str, metric: str, value: float) -> dict:
    return {
        "task": split.task,
        "fold": split.fold,
        "seed": split.seed,
        "evaluation": ev.name,
        "method": method,
        "metric": metric,
        "value": float(value),
    }


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """``task, method, metric, mean, sd, n`` over folds, seeds and evaluations."""
    grouped = rows.groupby(["task", "method", "metric"])["value"]
    out = grouped.agg(mean="mean", sd="std", n="count").reset_index()
    return out.fillna({"sd": 0.0})


# metrics where a smaller value is better; kNN AUC is best at 0.5 (compared as |AUC - 0.5|)
LOWER_IS_BETTER = frozenset({"edistance", "edistance_pertpy", "mmd", "mse_mean", "rank"}) | {
    "mcv_loss", "composition_error", "composition_error_truth"
}  # fmt: skip
BEST_AT_HALF = frozenset({"knn_auc"})


def _advantage(metric: str, ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """How much better ours is than theirs, pair by pair (positive: better)."""
    if metric in LOWER_IS_BETTER:
        return theirs - ours
    if metric in BEST_AT_HALF:
        return np.abs(theirs - 0.5) - np.abs(ours - 0.5)
    return ours - theirs


def paired_comparison(
    rows: pd.DataFrame,
    *,
    ours: Callable[[str], bool] = lambda m: m.startswith("rnadiff"),
    tolerance: float = 1e-9,
    z: float = 2.0,
) -> pd.DataFrame:
    """Each of our methods against every other method of a task, paired on the same held-out data.

    A pair is one ``(fold, seed, evaluation)`` that both methods were scored on for a
    metric. The advantage of a pair is ``ours - theirs`` for metrics where larger is better,
    ``theirs - ours`` for :data:`LOWER_IS_BETTER` and ``|theirs - 0.5| - |ours - 0.5|`` for
    :data:`BEST_AT_HALF`, so a positive advantage always means ours is better. Pairs from one
    seed share a trained model, so the standard error (``sd / sqrt(n)`` over pairs) treats
    them as independent: an approximation, read ``verdict`` as a guide, not a test.

    Parameters
    ----------
    rows
        Tidy rows ``task, fold, seed, evaluation, method, metric, value`` (``folds.csv``).
    ours
        Which method names are ours (compared against all the others).
    tolerance
        Advantages within this are counted as equal.
    z
        ``verdict`` is ``"better"`` where ``mean > z * se``, ``"worse"`` where
        ``mean < -z * se`` and ``"tie"`` otherwise.

    Returns
    -------
    pandas.DataFrame
        ``task, method, reference, metric, n, mean, se, better, equal, worse, verdict``,
        where ``mean`` and ``se`` are of the advantage.
    """
    need = {"task", "fold", "seed", "evaluation", "method", "metric", "value"}
    missing = need - set(rows.columns)
    if missing:
        raise ValueError(f"rows lack the columns {sorted(missing)}")
    keys = ["fold", "seed", "evaluation"]
    rows = rows.dropna(subset=["value"]).astype({k: str for k in keys})
    out = []
    for (task, metric), frame in rows.groupby(["task", "metric"], sort=True):
        wide = frame.pivot_table(index=keys, columns="method", values="value", aggfunc="mean")
        for method in sorted(m for m in wide.columns if ours(m)):
            for reference in sorted(m for m in wide.columns if m != method):
                both = wide[[method, reference]].dropna()
                if both.empty:
                    continue
                adv = _advantage(metric, both[method].to_numpy(), both[reference].to_numpy())
                n = len(adv)
                mean = float(adv.mean())
                se = float(adv.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
                if n > 1 and mean > z * se:
                    verdict = "better"
                elif n > 1 and mean < -z * se:
                    verdict = "worse"
                else:
                    verdict = "tie"
                out.append(
                    {
                        "task": task,
                        "method": method,
                        "reference": reference,
                        "metric": metric,
                        "n": n,
                        "mean": mean,
                        "se": se,
                        "better": int((adv > tolerance).sum()),
                        "equal": int((np.abs(adv) <= tolerance).sum()),
                        "worse": int((adv < -tolerance).sum()),
                        "verdict": verdict,
                    }
                )
    columns = ["task", "method", "reference", "metric", "n", "mean", "se"]
    return pd.DataFrame(out, columns=[*columns, "better", "equal", "worse", "verdict"])


def run_split(
    split: Split,
    config: BenchConfig,
    *,
    peers: dict[str, Callable[[Split, Prepared], tuple[Predictions, dict]]] | None = None,
    with_rnadiff: bool = True,
    extras: list[Callable[[Split, Prepared, RNADiffusion], list[dict]]] = (),
    on_predictions: Callable[[Split, Prepared, Predictions], None] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All methods on one split: (tidy metric rows, timings).

    ``extras``: further tasks run on the trained rnadiff model (e.g. design and ranking,
    :mod:`rnadiff.evaluation._design_tasks`), each returning tidy rows; ``on_predictions``
    receives every method's predicted cells (for plots).
    """
    prep = prepare(split, config)
    predictions = baseline_predictions(split, prep)
    timings, ours, extra_rows = [], {}, []
    if with_rnadiff:
        ours, timing, model = rnadiff_predictions(split, config)
        timings.append({"method": "rnadiff", **timing})
        if model is None:
            log(f"{split.task}/{split.fold}: rnadiff {timing['note']}")
        for task in extras if model is not None else ():
            t0 = time.perf_counter()
            extra_rows += task(split, prep, model)
            timings.append(
                {"method": f"rnadiff: {task.__name__}", "predict_s": time.perf_counter() - t0}
            )
    for name, run in (peers or {}).items():
        try:
            theirs, timing = run(split, prep)
            theirs = with_every_gene(theirs, prep)
        except PeerNotRun as why:
            timings.append({"method": name, "note": f"not run: {why}"})
            continue
        except RuntimeError as err:  # reported, not dropped
            log(f"{split.task}/{split.fold}: {name} gave no usable prediction: {err}")
            timings.append({"method": name, "error": str(err)})
            continue
        timings.append({"method": name, **timing})
        for ev_name, preds in theirs.items():
            predictions.setdefault(ev_name, {}).update(preds)
    for ev_name, preds in ours.items():
        predictions.setdefault(ev_name, {}).update(preds)
    if on_predictions is not None:  # e.g. plots of the predicted cells
        on_predictions(split, prep, predictions)
    rows = pd.concat([score_split(split, prep, predictions, config), pd.DataFrame(extra_rows)])
    times = pd.DataFrame(timings).assign(task=split.task, fold=split.fold, seed=split.seed)
    return rows, times


def with_every_gene(predictions: Predictions, prep: Prepared) -> Predictions:
    """Peers predict the modelled genes; the other genes pass through from the source cells
    (as rnadiff's do), so every method is scored on every gene."""
    cols = prep.modelled
    if len(cols) == len(prep.genes):
        return predictions
    out: Predictions = {}
    for ev_name, preds in predictions.items():
        source = prep.evaluations[ev_name]["source"]
        out[ev_name] = {}
        for method, x in preds.items():
            full = source.copy() if len(x) == len(source) else np.tile(source.mean(0), (len(x), 1))
            full[:, cols] = x
            out[ev_name][method] = full
    return out


def peer_inputs(split: Split, ev: Evaluation, prep: Prepared) -> dict[str, ad.AnnData]:
    """The files a peer gets: counts in ``layers['counts']``, log-normalized ``X``, the
    modelled genes."""
    genes = list(prep.state.genes)
    cols = prep.modelled

    def pack(adata: ad.AnnData, logx: np.ndarray) -> ad.AnnData:
        out = ad.AnnData(X=logx[:, cols], obs=adata.obs.copy(), var=pd.DataFrame(index=genes))
        counts = adata[:, genes].X
        out.layers["counts"] = counts.toarray() if hasattr(counts, "toarray") else counts
        return out

    pops = prep.evaluations[ev.name]
    return {
        "train": pack(split.train, prep.train),
        "source": pack(ev.source, pops["source"]),
        "real": pack(ev.real, pops["real"]),
    }
