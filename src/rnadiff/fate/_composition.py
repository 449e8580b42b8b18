"""State classifier and state composition (pure functions of arrays; no model, no AnnData).

A classifier learns cell states from reference cells with state labels (log-normalized
expression of the model's genes): a PCA of the reference cells, then a multinomial logistic
regression (default) or a kNN vote on the components (scikit-learn). Its accuracy is measured
by stratified cross-validation on the reference cells, so a user sees how far its labels can
be trusted before reading a composition.

The composition of a population is the fraction of its cells assigned to each state. Its
uncertainty is a percentile bootstrap over the cells (the population resampled with
replacement); it reflects how many cells were predicted, not the classifier's errors, which
the cross-validated accuracy and confusion matrix report.

A classifier that confuses states biases the fractions it counts. Given its cross-validated
confusion matrix ``C`` (``C[i, j]``: the share of cells of true state ``i`` assigned to ``j``),
the assigned fractions ``q`` of a population with true composition ``p`` are expected to be
``q = C^T p``; the *adjusted* composition (adjusted classify and count, Forman 2008) is the
``p`` on the simplex that solves this in least squares (:func:`adjusted_proportions`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rnadiff._errors import InputError

METHODS = ("logistic", "knn")


@dataclass
class StateClassifier:
    """Cell states from expression: PCA, then logistic regression or a kNN vote.

    Parameters
    ----------
    method : {'logistic', 'knn'}, default 'logistic'
        Multinomial logistic regression on the components, or a vote of the ``n_neighbors``
        nearest reference cells.
    n_components : int, default 30
        Principal components of the reference cells (at most cells - 1 and genes).
    n_neighbors : int, default 15
        Neighbours of the kNN vote.
    cv_folds : int, default 5
        Folds of the stratified cross-validation behind ``cv_accuracy_`` and ``confusion_``
        (at most the smallest state's cells; 0: none).
    seed : int, default 0
        Seed of the PCA and of the folds.

    Attributes
    ----------
    states_ : list of str
        The states, in the order of :meth:`predict_proba`'s columns.
    cv_accuracy_ : float
        Balanced accuracy of cross-validated predictions on the reference cells, with
        ``cv_folds`` folds, fewer when a state has fewer cells (NaN when a state has a single
        cell, or ``cv_folds`` < 2).
    confusion_ : pandas.DataFrame
        Cross-validated confusion matrix (rows: true state, columns: predicted), row-normalized.
    """

    method: str = "logistic"
    n_components: int = 30
    n_neighbors: int = 15
    cv_folds: int = 5
    seed: int = 0
    states_: list[str] = field(default_factory=list, init=False)
    cv_accuracy_: float = field(default=float("nan"), init=False)
    confusion_: pd.DataFrame | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.n_components < 1 or self.n_neighbors < 1 or self.cv_folds < 0:
            raise InputError("n_components and n_neighbors must be >= 1, cv_folds >= 0")
        self._pipeline = None

    def _make(self, n_cells: int, n_genes: int):
        from sklearn.decomposition import PCA
        from sklearn.linear_model import LogisticRegression
        from sklearn.neighbors import KNeighborsClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        pca = PCA(min(self.n_components, n_cells - 1, n_genes), random_state=self.seed)
        if self.method == "logistic":
            head = LogisticRegression(max_iter=2000, C=1.0)
        else:
            head = KNeighborsClassifier(min(self.n_neighbors, n_cells - 1))
        return make_pipeline(pca, StandardScaler(), head)

    def fit(self, x: np.ndarray, labels) -> StateClassifier:
        """Fit on reference cells ``x`` (cells x genes) with state ``labels`` (one per cell;
        missing labels are dropped)."""
        x = np.asarray(x, dtype=np.float64)
        labels = pd.Series(np.asarray(labels, dtype=object))
        keep = labels.notna().to_numpy()
        if x.ndim != 2 or len(labels) != len(x):
            raise InputError(f"{len(labels)} state labels for {len(x)} reference cells")
        x, y = x[keep], labels[keep].astype(str).to_numpy()
        states = sorted(set(y))
        if len(states) < 2:
            raise InputError(f"the reference cells need at least two states, found {states}")
        if len(y) < 10:
            raise InputError(f"{len(y)} labelled reference cells are too few (need >= 10)")
        self.states_ = states
        self._cross_validate(x, y)
        self._pipeline = self._make(*x.shape).fit(x, y)
        return self

    def _cross_validate(self, x: np.ndarray, y: np.ndarray) -> None:
        from sklearn.metrics import balanced_accuracy_score, confusion_matrix
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        smallest = pd.Series(y).value_counts().min()
        n_folds = min(self.cv_folds, smallest)  # a rare state: fewer folds, each holds it
        if n_folds < 2:
            return
        folds = StratifiedKFold(n_folds, shuffle=True, random_state=self.seed)
        n_train = len(y) - len(y) // n_folds - 1
        pred = cross_val_predict(self._make(n_train, x.shape[1]), x, y, cv=folds)
        self.cv_accuracy_ = float(balanced_accuracy_score(y, pred))
        cm = confusion_matrix(y, pred, labels=self.states_, normalize="true")
        self.confusion_ = pd.DataFrame(cm, index=self.states_, columns=self.states_)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """State probabilities of cells ``x`` (cells x states, columns ``states_``)."""
        if self._pipeline is None:
            raise InputError("the state classifier is not fitted; call fit(x, labels) first")
        x = np.asarray(x, dtype=np.float64)
        proba = self._pipeline.predict_proba(x)
        order = [list(self._pipeline.classes_).index(s) for s in self.states_]
        return proba[:, order]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The most probable state of each cell."""
        return np.asarray(self.states_, dtype=object)[self.predict_proba(x).argmax(1)]


def adjusted_proportions(assigned, confusion) -> np.ndarray:
    r"""The composition that explains the assigned fractions under the classifier's errors.

    Solves

    .. math::

        \hat p = \arg\min_{p \ge 0,\ \sum_i p_i = 1} \lVert C^\top p - q \rVert_2^2

    (non-negative least squares with the sum as a heavily weighted extra equation, then
    normalized), where ``q`` are the fractions of cells assigned to each state and
    ``C[i, j]`` the share of cells of true state ``i`` that the classifier assigns to ``j``
    (row-normalized, e.g. :attr:`StateClassifier.confusion_`). With a perfect classifier
    (``C = I``) the assigned fractions are returned unchanged.

    Parameters
    ----------
    assigned : array-like, shape (n_states,) or (n_draws, n_states)
        Fractions of cells assigned to each state (rows: several populations).
    confusion : array-like or pandas.DataFrame, shape (n_states, n_states)
        Row-normalized confusion matrix over the same states, in the same order.

    Returns
    -------
    numpy.ndarray
        Adjusted fractions, the shape of ``assigned``; each row sums to 1.
    """
    from scipy.optimize import nnls

    c = np.asarray(confusion, dtype=float)
    q = np.asarray(assigned, dtype=float)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or q.shape[-1] != c.shape[0]:
        raise InputError(
            f"a confusion matrix of {c.shape} does not match fractions over {q.shape[-1]} states"
        )
    if not np.isfinite(c).all():
        raise InputError("the confusion matrix has missing values; it cannot adjust")
    weight = 1e3  # the sum-to-one equation, much heavier than any fraction's residual
    a = np.vstack([c.T, np.full((1, len(c)), weight)])
    rows = np.atleast_2d(q)
    out = np.stack([nnls(a, np.append(r, weight))[0] for r in rows])
    out /= out.sum(axis=1, keepdims=True).clip(min=1e-12)
    return out.reshape(q.shape)


def composition(
    labels,
    states=None,
    *,
    confusion=None,
    n_boot: int = 500,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Fraction of cells in each state with a percentile bootstrap interval over cells.

    Parameters
    ----------
    labels : array-like of str
        One state per cell.
    states : list of str, optional
        States to report (default: those in ``labels``, sorted); absent ones get 0.
    confusion : pandas.DataFrame, optional
        The classifier's row-normalized confusion matrix (rows: true state, columns:
        assigned; :attr:`StateClassifier.confusion_`). Given, the proportions (and each
        bootstrap draw) are adjusted for the classifier's errors
        (:func:`adjusted_proportions`); ``n_cells`` stays the count assigned.
    n_boot : int, default 500
        Bootstrap resamples of the cells (0: no interval).
    level : float, default 0.95
        Coverage of the interval.
    seed : int, default 0
        Seed of the resampling.

    Returns
    -------
    pandas.DataFrame
        Index: state; columns ``proportion``, ``low``, ``high``, ``n_cells``.
    """
    if confusion is not None:
        if states is None:
            states = list(getattr(confusion, "index", []))
        if isinstance(confusion, pd.DataFrame):
            missing = [s for s in map(str, states) if s not in confusion.index]
            if missing or len(confusion.index) != len(states):
                raise InputError(
                    f"the confusion matrix covers states {list(confusion.index)}, "
                    f"the composition {list(map(str, states))}"
                )
            confusion = confusion.loc[list(map(str, states)), list(map(str, states))]
    labels = np.asarray(labels, dtype=object).astype(str)
    states = sorted(set(labels)) if states is None else [str(s) for s in states]
    if len(labels) == 0:
        raise InputError("no cells to compute a state composition from")
    if not 0 < level < 1:
        raise InputError(f"level must be in (0, 1), got {level}")
    codes = pd.Categorical(labels, categories=states).codes
    counts = np.bincount(codes[codes >= 0], minlength=len(states))
    share = counts / len(labels)
    if confusion is not None:
        share = adjusted_proportions(share, confusion)
    out = pd.DataFrame(
        {"proportion": share, "n_cells": counts},
        index=pd.Index(states, name="state"),
    )
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, len(labels), size=(n_boot, len(labels)))
        boot = np.stack([np.bincount(c[c >= 0], minlength=len(states)) for c in codes[draws]])
        boot = boot / len(labels)
        if confusion is not None:
            boot = adjusted_proportions(boot, confusion)
        alpha = (1 - level) / 2
        out["low"] = np.quantile(boot, alpha, axis=0)
        out["high"] = np.quantile(boot, 1 - alpha, axis=0)
    else:
        out["low"] = out["high"] = np.nan
    return out[["proportion", "low", "high", "n_cells"]]


def composition_error(predicted, real) -> float:
    """Total variation distance between two compositions (Series or arrays over the same
    states): half the sum of absolute differences, in [0, 1]."""
    if isinstance(predicted, pd.DataFrame):
        predicted = predicted["proportion"]
    if isinstance(real, pd.DataFrame):
        real = real["proportion"]
    if isinstance(predicted, pd.Series) and isinstance(real, pd.Series):
        states = predicted.index.union(real.index)
        predicted = predicted.reindex(states, fill_value=0.0)
        real = real.reindex(states, fill_value=0.0)
    p, q = np.asarray(predicted, dtype=float), np.asarray(real, dtype=float)
    if p.shape != q.shape:
        raise InputError(f"compositions over different states: {p.shape} vs {q.shape}")
    return float(0.5 * np.abs(p - q).sum())
