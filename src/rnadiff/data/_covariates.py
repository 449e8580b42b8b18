"""The covariate registry: which obs columns condition the model, and how each is encoded."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from rnadiff._errors import InputError
from rnadiff.data._validation import check_numeric_column, check_obs_columns

logger = logging.getLogger("rnadiff")

Role = Literal["perturbation", "cell_type", "batch", "categorical", "dose", "time", "continuous"]


@dataclass(frozen=True)
class Covariate:
    """One conditioning covariate.

    Attributes
    ----------
    key
        The ``.obs`` column.
    role
        What it is; perturbations may be combinations of parts joined by ``sep``.
    tokens
        Vocabulary of a categorical covariate (the parts of combinations), in encoding order.
    sep
        Separator of combinations (``"A+B"``), or ``None`` for plain categories.
    control
        Perturbation: the control value, the identity of combinations (``"A+ctrl"`` is ``A``).
    log
        Continuous: ``log1p`` before standardizing (doses span orders of magnitude).
    mean, std
        Continuous: standardization fitted on training cells.
    molecules
        Perturbation: ``(name, SMILES)`` of every drug with a known structure (training
        tokens and any other named drug, e.g. candidates to predict).
    dosed
        Perturbation: tokens measured at a positive dose in training (their effect follows
        the dose-response curve).
    gene_embedding_dim
        Perturbation: width of the user's gene embeddings of knock-out targets (0: none).
    log_center, log_scale
        Dose: mean and standard deviation of the log of the positive training doses (the
        dose-response curve's reference scale).
    """

    key: str
    role: Role
    tokens: tuple[str, ...] = ()
    sep: str | None = None
    log: bool = False
    mean: float = 0.0
    std: float = 1.0
    control: str | None = None
    molecules: tuple[tuple[str, str], ...] = ()
    dosed: tuple[str, ...] = ()
    gene_embedding_dim: int = 0
    log_center: float = 0.0
    log_scale: float = 1.0

    @property
    def categorical(self) -> bool:
        return self.role in ("perturbation", "cell_type", "batch", "categorical")

    def parts(self, value) -> list[str]:
        """Split a value into its parts (a combination ``A+B`` into ``[A, B]``)."""
        text = str(value)
        if self.sep is None:
            return [text]
        parts = [p.strip() for p in text.split(self.sep) if p.strip()]
        non_control = [p for p in parts if p != self.control]
        return non_control or parts[:1]


@dataclass(frozen=True)
class CovariateRegistry:
    """All covariates of a model, with the control value of the perturbation."""

    covariates: tuple[Covariate, ...]
    perturbation_key: str | None = None
    control: str | None = None

    @classmethod
    def fit(cls, obs: pd.DataFrame, setup: Mapping) -> CovariateRegistry:
        """Build the registry from training cells and a setup dict (see ``setup_anndata``)."""
        roles: list[tuple[str, Role]] = []
        for name, role in (
            ("perturbation_key", "perturbation"),
            ("cell_type_key", "cell_type"),
            ("batch_key", "batch"),
            ("dose_key", "dose"),
            ("time_key", "time"),
        ):
            if setup.get(name):
                roles.append((setup[name], role))
        roles += [(k, "categorical") for k in setup.get("categorical_keys", ())]
        roles += [(k, "continuous") for k in setup.get("continuous_keys", ())]
        keys = [k for k, _ in roles]
        if len(set(keys)) != len(keys):
            raise InputError(f"a column is registered twice: {keys}")
        check_obs_columns(obs, keys)
        covs = []
        sep = setup.get("combination_sep") or None
        control = setup.get("control")
        control = None if control is None else str(control)
        for key, role in roles:
            if role in ("dose", "time", "continuous"):
                raw = check_numeric_column(obs, key)
                log = role == "dose"
                if log and (raw < 0).any():
                    raise InputError(f"dose column {key!r} holds negative values")
                v = np.log1p(raw) if log else raw
                std = float(v.std()) or 1.0
                cov = Covariate(key, role, log=log, mean=float(v.mean()), std=std)
                if log and (raw > 0).any():
                    logs = np.log(raw[raw > 0])
                    cov = dataclasses.replace(
                        cov, log_center=float(logs.mean()), log_scale=float(logs.std()) or 1.0
                    )
                covs.append(cov)
            else:
                is_pert = role == "perturbation"
                cov = Covariate(
                    key, role, sep=sep if is_pert else None, control=control if is_pert else None
                )
                values = pd.unique(obs[key].astype(str))
                tokens = sorted({p for v in values for p in cov.parts(v)})
                if is_pert and sep is not None:
                    _warn_odd_combinations(cov, values)
                cov = dataclasses.replace(cov, tokens=tuple(tokens))
                if is_pert:
                    cov = _with_structures(cov, obs, setup)
                covs.append(cov)
        pkey = setup.get("perturbation_key")
        if pkey is not None and control is not None:
            present = set(obs[pkey].astype(str))
            if str(control) not in present:
                raise InputError(
                    f"control value {control!r} does not occur in column {pkey!r}; "
                    f"values are e.g. {sorted(present)[:10]}"
                )
        return cls(
            tuple(covs), perturbation_key=pkey, control=None if control is None else str(control)
        )

    @property
    def keys(self) -> list[str]:
        return [c.key for c in self.covariates]

    def __getitem__(self, key: str) -> Covariate:
        for cov in self.covariates:
            if cov.key == key:
                return cov
        raise InputError(f"{key!r} is not a covariate of this model; covariates: {self.keys}")

    def encode(
        self,
        obs: pd.DataFrame,
        *,
        allow_missing: bool = False,
        soft: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
    ) -> dict[str, np.ndarray]:
        """Encode the covariates of each row of ``obs`` as model condition arrays.

        Categorical covariates become multi-hot float32 ``(n, n_tokens)`` matrices, continuous ones
        standardized float32 vectors. With ``allow_missing``, absent columns and missing values
        (None/NaN) become the null value (zero row, NaN), i.e. "unspecified". ``soft``:
        ``{covariate: {unseen token: {known token: weight}}}`` encodes an unseen token as a
        weighted mix of known ones (see :mod:`rnadiff.conditioning._prior`).
        """
        out = {}
        n = len(obs)
        for cov in self.covariates:
            if cov.key not in obs.columns:
                if not allow_missing:
                    raise InputError(f"column {cov.key!r} (a covariate of the model) is missing")
                column = pd.Series([None] * n, index=obs.index, dtype=object)
            else:
                column = obs[cov.key]
            missing = column.isna().to_numpy()
            if missing.any() and not allow_missing:
                raise InputError(f"column {cov.key!r} has {int(missing.sum())} missing values")
            if cov.categorical:
                out[cov.key] = self._encode_categorical(
                    cov, column, missing, (soft or {}).get(cov.key)
                )
            else:
                v = np.full(n, np.nan)
                if (~missing).any():
                    raw = check_numeric_column(pd.DataFrame({cov.key: column[~missing]}), cov.key)
                    if cov.log and (raw < 0).any():
                        raise InputError(f"dose column {cov.key!r} holds negative values")
                    v[~missing] = ((np.log1p(raw) if cov.log else raw) - cov.mean) / cov.std
                out[cov.key] = v.astype(np.float32)
        return out

    def _encode_categorical(
        self,
        cov: Covariate,
        column: pd.Series,
        missing: np.ndarray,
        soft: Mapping[str, Mapping[str, float]] | None = None,
    ):
        index = {t: i for i, t in enumerate(cov.tokens)}
        soft = soft or {}
        codes, uniques = pd.factorize(column.astype(str))
        rows = np.zeros((len(uniques), len(cov.tokens)), dtype=np.float32)
        for u, value in enumerate(uniques):
            parts = cov.parts(value)
            for p in parts:  # an unseen token standing for a mix of known ones (a prior)
                for known, w in soft.get(p, {}).items():
                    rows[u, index[known]] += w
            unknown = [p for p in parts if p not in index and p not in soft]
            if unknown and not missing[codes == u].all():
                what = "perturbation" if cov.role == "perturbation" else "value"
                hint = (
                    "; a drug never seen in training is predicted from its structure once "
                    "the model has its SMILES (model.add_molecules({name: smiles}))"
                    if cov.molecules
                    else ""
                )
                if cov.role != "perturbation":
                    hint = (
                        f"; a {cov.key} never seen in training cannot be encoded: train with "
                        "some of its cells (its control cells are enough to predict their "
                        "response, as in a leave-one-cell-type-out split), or give these "
                        "cells a value the model knows"
                    )
                raise InputError(
                    f"unknown {what} {unknown[0]!r} in column {cov.key!r}; the model knows "
                    f"{len(cov.tokens)}: {list(cov.tokens)[:20]}{hint}"
                )
            for p in dict.fromkeys(parts):  # each known part once, added to any prior mix
                if p in index:
                    rows[u, index[p]] += 1.0
        encoded = rows[codes]
        encoded[missing] = 0.0
        return encoded

    def to_dict(self) -> dict:
        return {
            "covariates": [dataclasses.asdict(c) for c in self.covariates],
            "perturbation_key": self.perturbation_key,
            "control": self.control,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> CovariateRegistry:
        covs = tuple(
            Covariate(
                **{
                    **c,
                    "tokens": tuple(c["tokens"]),
                    "molecules": tuple(tuple(m) for m in c.get("molecules", ())),
                    "dosed": tuple(c.get("dosed", ())),
                }
            )
            for c in d["covariates"]
        )
        return cls(covs, perturbation_key=d["perturbation_key"], control=d["control"])

    @property
    def dose_key(self) -> str | None:
        """The dose covariate's column (None: no dose)."""
        return next((c.key for c in self.covariates if c.role == "dose"), None)

    def replace(self, key: str, **changes) -> CovariateRegistry:
        """A copy with the fields ``changes`` of covariate ``key`` replaced."""
        self[key]  # raises on an unknown key
        covs = tuple(
            dataclasses.replace(c, **changes) if c.key == key else c for c in self.covariates
        )
        return dataclasses.replace(self, covariates=covs)

    def with_tokens(self, key: str, names: Sequence[str], *, dosed: Sequence[str] = ()):
        """A copy whose categorical covariate ``key`` also knows ``names`` (appended in this
        order after the training tokens), ``dosed`` among them following the dose."""
        cov = self[key]
        new = tuple(n for n in names if n not in cov.tokens)
        extra = tuple(d for d in dosed if d not in cov.dosed)
        return self.replace(key, tokens=cov.tokens + new, dosed=cov.dosed + extra)


def _with_structures(cov: Covariate, obs: pd.DataFrame, setup: Mapping) -> Covariate:
    """The perturbation covariate with its drugs' structures (``smiles_key``, ``smiles``)
    and the tokens measured at a positive dose."""
    from rnadiff.data._molecules import check_table, table_from_obs

    table: dict[str, str] = {}
    if setup.get("smiles_key"):
        table = table_from_obs(
            obs, cov.key, setup["smiles_key"], parts=cov.parts, control=cov.control
        )
    given = check_table(setup.get("smiles") or {}, what="smiles")
    for name, smiles in given.items():
        if table.get(name, smiles) != smiles:
            raise InputError(
                f"perturbation {name!r} has one SMILES in column {setup['smiles_key']!r} "
                f"({table[name]!r}) and another in smiles= ({smiles!r})"
            )
        table[name] = smiles
    table.pop(str(cov.control), None)  # the control is the reference, not a drug
    dosed: tuple[str, ...] = ()
    if setup.get("dose_key"):
        dose = pd.to_numeric(obs[setup["dose_key"]], errors="coerce").to_numpy()
        dosed = dosed_tokens(cov, obs[cov.key].astype(str).to_numpy(), dose)
    return dataclasses.replace(
        cov,
        molecules=tuple(sorted(table.items())),
        dosed=dosed,
    )


def dosed_tokens(cov: Covariate, values: np.ndarray, dose: np.ndarray) -> tuple[str, ...]:
    """The perturbation tokens whose effect follows the dose: those measured at a positive
    dose, alone or in a combination, except a token also measured alone and never alone at a
    positive dose (e.g. a knock-out paired with a drug: the combination's dose is the drug's;
    the knock-out, measured alone at dose 0 or without a dose, acts in full)."""
    positive = dose > 0
    parts = [cov.parts(v) for v in values]
    alone_positive = {p[0] for p, d in zip(parts, positive, strict=True) if len(p) == 1 and d}
    alone_other = {p[0] for p, d in zip(parts, positive, strict=True) if len(p) == 1 and not d}
    in_positive = {t for p, d in zip(parts, positive, strict=True) if d for t in p}
    dosed = alone_positive | (in_positive - alone_other)
    return tuple(sorted(dosed - {cov.control}))


def _warn_odd_combinations(cov: Covariate, values) -> None:
    """Warn when a value split at the separator has parts that are not labels of the column
    (e.g. ``"CD14+ Monocytes"``: ``+`` belongs to the name, not a combination)."""
    singles = {cov.parts(v)[0] for v in values if len(cov.parts(v)) == 1}
    odd = [v for v in values if len(cov.parts(v)) > 1 and not set(cov.parts(v)) <= singles]
    if odd:
        logger.warning(
            "rnadiff: %d values of %r hold the combination separator %r but their parts are "
            "not values of the column themselves (e.g. %r -> %s); if %r is part of the names, "
            "pass combination_sep=None (--combination-sep '')",
            len(odd),
            cov.key,
            cov.sep,
            odd[0],
            cov.parts(odd[0]),
            cov.sep,
        )


def conditions_frame(
    conditions: Mapping | Sequence[Mapping] | pd.DataFrame, registry: CovariateRegistry
) -> pd.DataFrame:
    """Turn user conditions (a dict, a list of dicts or a DataFrame) into a checked DataFrame."""
    if isinstance(conditions, pd.DataFrame):
        frame = conditions.reset_index(drop=True)
    elif isinstance(conditions, Mapping) and not conditions:
        return pd.DataFrame(index=pd.RangeIndex(1))  # one condition: everything unspecified
    elif isinstance(conditions, Mapping):
        frame = pd.DataFrame([dict(conditions)])
    else:
        frame = pd.DataFrame([dict(c) for c in conditions])
    if len(frame) == 0:
        raise InputError("no conditions given")
    extra = [c for c in frame.columns if c not in registry.keys]
    if extra:
        raise InputError(f"unknown covariates {extra}; the model's covariates are {registry.keys}")
    for cov in registry.covariates:  # numbers given as text ("5" from a CLI or CSV) stay numbers
        if not cov.categorical and cov.key in frame.columns:
            frame[cov.key] = numeric_value(cov.key, frame[cov.key])
    return frame


def numeric_value(key: str, value):
    """``value`` (a scalar or a Series) of the continuous covariate ``key`` as float; missing
    values stay NaN, text that is not a number is an error."""
    series = pd.Series(value if isinstance(value, pd.Series) else [value], dtype=object)
    numbers = pd.to_numeric(series, errors="coerce")
    bad = numbers.isna() & series.notna()
    if bad.any():
        raise InputError(
            f"covariate {key!r} is continuous; {series[bad].iloc[0]!r} is not a number"
        )
    numbers = numbers.astype(float)
    return numbers if isinstance(value, pd.Series) else float(numbers.iloc[0])
