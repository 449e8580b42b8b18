"""Features of perturbation tokens: drug fingerprints and gene embeddings, and the encoder's
specification they imply.

A token with features is embedded by a learned projection of them
(:class:`rnadiff.conditioning.PerturbationEmbedding`), so a drug or gene never seen in training
is embedded from its structure or its gene embedding. :class:`TokenFeatures` describes any
name (seen or not); :func:`perturbation_spec` says what the encoder needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from rnadiff._errors import InputError
from rnadiff.conditioning._encoders import DoseScale, PerturbationSpec
from rnadiff.data._covariates import CovariateRegistry
from rnadiff.data._molecules import fingerprints


@dataclass(frozen=True)
class GeneTable:
    """User-supplied gene embeddings: ``genes`` (names) and ``vectors`` (genes x width)."""

    genes: tuple[str, ...]
    vectors: np.ndarray = field(repr=False)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, *, keep: Sequence[str] | None = None) -> GeneTable:
        """From a DataFrame indexed by gene (one row per gene, numeric columns); ``keep``:
        only these genes (e.g. the data's genes and the perturbation tokens)."""
        if not isinstance(frame, pd.DataFrame):
            raise InputError(
                "gene_embeddings must be a pandas DataFrame indexed by gene name, got "
                f"{type(frame).__name__}"
            )
        if frame.shape[0] == 0 or frame.shape[1] == 0:
            raise InputError(f"gene_embeddings is empty ({frame.shape[0]} x {frame.shape[1]})")
        if not frame.index.is_unique:
            dup = frame.index[frame.index.duplicated()].unique()[:3].tolist()
            raise InputError(f"gene_embeddings has genes twice (e.g. {dup})")
        try:
            values = frame.to_numpy(dtype=np.float32)
        except (TypeError, ValueError):
            raise InputError("gene_embeddings must hold numbers only") from None
        if not np.isfinite(values).all():
            raise InputError("gene_embeddings holds NaN or infinite values")
        genes = frame.index.astype(str)
        if keep is not None:
            rows = genes.isin(list(keep))
            genes, values = genes[rows], values[rows]
        return cls(tuple(genes), values)

    @property
    def width(self) -> int:
        return int(self.vectors.shape[1])


@dataclass(frozen=True)
class TokenFeatures:
    """What describes a perturbation name: its SMILES (``molecules``) or its gene embedding
    (``genes``); fingerprints of ``radius`` and ``bits``."""

    molecules: dict[str, str] = field(default_factory=dict)
    genes: GeneTable | None = None
    radius: int = 2
    bits: int = 2048

    @property
    def dims(self) -> dict[str, int]:
        """``{kind: width}`` of the kinds of features there are."""
        out = {"molecule": self.bits} if self.molecules else {}
        if self.genes is not None:
            out["gene"] = self.genes.width
        return out

    def knows(self, name: str) -> bool:
        """Whether ``name`` has features (a drug with SMILES, a gene with an embedding)."""
        return name in self.molecules or (self.genes is not None and name in self.genes.genes)

    def is_molecule(self, name: str) -> bool:
        return name in self.molecules

    def tensors(
        self, names: Sequence[str]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(features, has)`` per kind for ``names``: rows of zeros and ``False`` where a
        name has none of that kind. A drug is described by its structure even when it is
        also a gene name."""
        names = list(names)
        features, has = {}, {}
        if self.molecules:
            features["molecule"] = torch.from_numpy(
                fingerprints(self.molecules, names, radius=self.radius, bits=self.bits)
            )
            has["molecule"] = torch.tensor([n in self.molecules for n in names], dtype=torch.bool)
        if self.genes is not None:
            index = {g: i for i, g in enumerate(self.genes.genes)}
            rows = [index.get(n) for n in names]
            gene_has = [
                r is not None and n not in self.molecules for n, r in zip(names, rows, strict=True)
            ]
            matrix = np.zeros((len(names), self.genes.width), dtype=np.float32)
            for i, (r, ok) in enumerate(zip(rows, gene_has, strict=True)):
                if ok:
                    matrix[i] = self.genes.vectors[r]
            features["gene"] = torch.from_numpy(matrix)
            has["gene"] = torch.tensor(gene_has, dtype=torch.bool)
        return features, has


def perturbation_spec(
    registry: CovariateRegistry,
    features: TokenFeatures,
    dose_response: str,
    dose_unknown: str = "full",
) -> PerturbationSpec | None:
    """The perturbation encoder's specification: features of the kinds there are, and the
    Hill dose-response when a dose covariate exists, some token was measured at a positive
    dose and ``dose_response`` is not ``"embedding"``. None when neither applies (the
    perturbation is then a plain :class:`rnadiff.conditioning.SetEmbedding`, as in models
    of rnadiff before 0.4)."""
    pkey = registry.perturbation_key
    if pkey is None:
        return None
    cov = registry[pkey]
    dkey = registry.dose_key
    dose = None
    if dkey is not None and cov.dosed and dose_response != "embedding":
        d = registry[dkey]
        dose = DoseScale(d.mean, d.std, d.log_center, d.log_scale)
    dims = features.dims
    if not dims and dose is None:
        return None
    control = cov.tokens.index(registry.control) if registry.control in cov.tokens else None
    return PerturbationSpec(
        key=pkey,
        feature_dims=dims,
        dose_key=dkey if dose is not None else None,
        dose=dose,
        dose_embedding=dose_response == "hill+embedding",
        control=control,
        unknown_learned=dose_unknown == "learned",
    )
