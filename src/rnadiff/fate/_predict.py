"""``predict_fate``: what perturbed cells become, as a composition of cell states."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import pandas as pd

from rnadiff._errors import InputError
from rnadiff.data._io import save_figure
from rnadiff.fate._composition import StateClassifier, composition

if TYPE_CHECKING:
    from rnadiff.model import RNADiffusion


def fit_state_classifier(
    model: RNADiffusion,
    reference: ad.AnnData,
    state_key: str,
    *,
    layer: str | None = None,
    method: str = "logistic",
    seed: int = 0,
) -> StateClassifier:
    """A :class:`StateClassifier` fitted on ``reference`` cells' ``obs[state_key]``, on the
    model's genes normalized as its training cells (:meth:`RNADiffusion.log_expression`)."""
    if state_key not in reference.obs:
        raise InputError(
            f"state_key {state_key!r} is not a column of the reference cells' obs; "
            f"columns: {list(reference.obs.columns)}"
        )
    x = model.log_expression(reference, layer=layer)
    return StateClassifier(method=method, seed=seed).fit(x, reference.obs[state_key].to_numpy())


def predict_fate(
    model: RNADiffusion,
    source: ad.AnnData,
    *,
    reference: ad.AnnData,
    state_key: str,
    perturbation: str | None = None,
    target: Mapping[str, object] | None = None,
    classifier: StateClassifier | None = None,
    classifier_method: str = "logistic",
    layer: str | None = None,
    reference_layer: str | None = None,
    adjust: bool = True,
    n_boot: int = 500,
    seed: int = 0,
    key_added: str = "rnadiff_state",
    progress: bool = True,
    **predict_kwargs,
) -> ad.AnnData:
    """Predict what ``source`` cells become under a target condition, as cell states.

    The model predicts the cells (:meth:`RNADiffusion.predict`); a classifier fitted on the
    ``reference`` cells' state labels assigns each predicted cell a state; the composition is
    the fraction of cells per state, adjusted for the classifier's cross-validated confusion
    (``adjust``), with a bootstrap interval over cells (:func:`rnadiff.fate.composition`).

    Parameters
    ----------
    model : RNADiffusion
        A trained model.
    source : AnnData
        Cells to start from (e.g. controls of the context of interest).
    reference : AnnData
        Cells with known states (``obs[state_key]``), e.g. the training cells; they define the
        states and train the classifier.
    state_key : str
        Column of ``reference.obs`` with the state labels.
    perturbation, target
        The target condition, as for :meth:`RNADiffusion.predict`.
    classifier : StateClassifier, optional
        A fitted classifier to reuse (default: fitted here on ``reference``).
    classifier_method : {'logistic', 'knn'}, default 'logistic'
        Classifier fitted when ``classifier`` is not given.
    layer, reference_layer : str, optional
        Where ``source`` / ``reference`` hold their expression (default as the model reads).
    adjust : bool, default True
        Correct the composition for the classifier's errors (adjusted classify and count:
        :func:`rnadiff.fate.adjusted_proportions` with the cross-validated confusion matrix).
        Without a confusion matrix (a state with a single reference cell) the counted
        fractions are reported, and ``params['adjusted']`` says so. On real cells with known
        states the adjustment lowered the composition error (Kang cell types 0.234 -> 0.177
        and 0.077 -> 0.060, HSMM states 0.30 -> 0.22; benchmarks/results/studies/fate_adjusted).
        It assumes the classifier errs on these cells as on held-out reference cells: the
        reference cells themselves are classified better than that, and adjusting their
        composition over-corrects (count them, or use their labels).
    n_boot : int, default 500
        Bootstrap resamples for the interval.
    seed : int, default 0
        Seed of the prediction, the classifier and the bootstrap.
    key_added : str, default 'rnadiff_state'
        ``obs`` column of the predicted cells' state; ``obs[key_added + '_probability']``
        holds the classifier's probability of it.
    progress : bool, default True
        Show a progress bar while predicting.
    **predict_kwargs
        Passed to :meth:`RNADiffusion.predict` (``method``, sampler, steps, guidance, ...).
        For a change of composition ask for ``method="generate"``: a counterfactual keeps
        each source cell's own variation, its state included.

    Returns
    -------
    AnnData
        The predicted cells with their states in ``obs``, and ``uns['rnadiff_fate']``:
        ``composition`` (state -> proportion, low, high, n_cells), ``cv_accuracy`` (the
        classifier's cross-validated balanced accuracy on the reference cells), ``confusion``
        and the settings.
    """
    if classifier is None:
        classifier = fit_state_classifier(
            model, reference, state_key, layer=reference_layer, method=classifier_method, seed=seed
        )
    pred = model.predict(
        source,
        perturbation=perturbation,
        target=target,
        layer=layer,
        seed=seed,
        progress=progress,
        **predict_kwargs,
    )
    add_states(
        model, pred, classifier, key_added=key_added, adjust=adjust, n_boot=n_boot, seed=seed
    )
    pred.uns["rnadiff_fate"]["params"] |= {"state_key": state_key, "classifier": classifier.method}
    return pred


def add_states(
    model: RNADiffusion,
    cells: ad.AnnData,
    classifier: StateClassifier,
    *,
    key_added: str = "rnadiff_state",
    adjust: bool = True,
    n_boot: int = 500,
    seed: int = 0,
) -> pd.DataFrame:
    """Classify ``cells`` (real or predicted) in place: ``obs[key_added]``, its probability,
    and ``uns['rnadiff_fate']``; returns the composition table (adjusted for the classifier's
    confusion when ``adjust`` and the classifier has one, see :func:`predict_fate`)."""
    proba = classifier.predict_proba(model.log_expression(cells))
    states = np.asarray(classifier.states_, dtype=object)[proba.argmax(1)]
    cells.obs[key_added] = pd.Categorical(states, categories=classifier.states_)
    cells.obs[f"{key_added}_probability"] = proba.max(1).astype(np.float32)
    confusion = classifier.confusion_
    adjusted = adjust and confusion is not None
    table = composition(
        states,
        classifier.states_,
        confusion=confusion if adjusted else None,
        n_boot=n_boot,
        seed=seed,
    )
    cells.uns["rnadiff_fate"] = {
        "composition": {c: table[c].to_numpy() for c in table.columns}
        | {"state": table.index.to_numpy()},
        "cv_accuracy": classifier.cv_accuracy_,
        "confusion": None if confusion is None else confusion.to_numpy(),
        "params": {"key_added": key_added, "adjusted": adjusted, "n_boot": n_boot, "seed": seed},
    }
    return table


def compositions_by(
    cells: ad.AnnData,
    classifier: StateClassifier,
    by: str | None = None,
    *,
    key_added: str = "rnadiff_state",
    adjust: bool = True,
    n_boot: int = 500,
    seed: int = 0,
) -> pd.DataFrame:
    """State compositions of classified cells (``obs[key_added]``, from :func:`add_states`),
    one per value of ``obs[by]`` (e.g. the target perturbation of a screen), or of all cells.

    Returns
    -------
    pandas.DataFrame
        Long table: ``by`` (when given), ``state``, ``proportion``, ``low``, ``high``,
        ``n_cells``; proportions adjusted for the classifier's confusion as in
        :func:`predict_fate`.
    """
    if key_added not in cells.obs:
        raise InputError(f"the cells have no obs[{key_added!r}]; classify them first (add_states)")
    if by is not None and by not in cells.obs:
        raise InputError(f"no obs column {by!r} to group the compositions by")
    confusion = classifier.confusion_ if adjust else None
    labels = cells.obs[key_added].astype(str).to_numpy()
    groups = [(None, np.ones(len(labels), dtype=bool))]
    if by is not None:
        values = cells.obs[by].astype(str).to_numpy()
        groups = [(g, values == g) for g in dict.fromkeys(values)]
    tables = []
    for group, mask in groups:
        table = composition(
            labels[mask], classifier.states_, confusion=confusion, n_boot=n_boot, seed=seed
        ).reset_index()
        tables.append(table if by is None else table.assign(**{by: group}))
    out = pd.concat(tables, ignore_index=True)
    return out if by is None else out[[by, *[c for c in out.columns if c != by]]]


def fate_table(cells: ad.AnnData) -> pd.DataFrame:
    """The composition stored by :func:`predict_fate` in ``cells.uns['rnadiff_fate']``."""
    if "rnadiff_fate" not in cells.uns:
        raise InputError("these cells have no uns['rnadiff_fate']; run predict_fate first")
    stored = dict(cells.uns["rnadiff_fate"]["composition"])
    return pd.DataFrame(stored).set_index("state")


def plot_fate(
    compositions: Mapping[str, pd.DataFrame], path: str | os.PathLike, *, title: str = ""
) -> None:
    """Stacked bars of state compositions (one bar per named population, e.g. 'predicted',
    'real', 'control'), with the bootstrap interval of each state's share as error bars; PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not compositions:
        raise InputError("no compositions to plot")
    names = list(compositions)
    states = list(dict.fromkeys(s for t in compositions.values() for s in t.index))
    fig, ax = plt.subplots(figsize=(1.4 + 1.1 * len(names), 3.6))
    bottom = np.zeros(len(names))
    for state in states:
        share = np.array([compositions[n]["proportion"].get(state, 0.0) for n in names])
        ax.bar(names, share, bottom=bottom, label=state, width=0.6)
        low = np.array([compositions[n].get("low", pd.Series()).get(state, np.nan) for n in names])
        high = np.array(
            [compositions[n].get("high", pd.Series()).get(state, np.nan) for n in names]
        )
        ok = np.isfinite(low) & np.isfinite(high)
        x = np.arange(len(names))[ok]
        err = np.vstack([share[ok] - low[ok], high[ok] - share[ok]]).clip(0)
        ax.errorbar(x + 0.18, (bottom + share)[ok], yerr=err, fmt="none", ecolor="k", lw=0.8)
        bottom += share
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of cells")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
