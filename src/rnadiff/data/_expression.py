"""Where a cell's expression is read from: ``X``, a layer, or ``adata.raw``.

scanpy's usual layout keeps log-normalized values in ``X`` and the raw counts in
``layers['counts']`` (or in ``adata.raw``). rnadiff models counts when it can, so with
log-normalized ``X`` it reads those counts instead, and says so (:func:`choose_source`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd

from rnadiff._errors import InputError
from rnadiff.data._inputs import InputInfo, detect_input

logger = logging.getLogger("rnadiff")

COUNT_LAYERS = ("counts", "raw_counts", "umi_counts")  # layer names scanpy users give counts


@dataclass(frozen=True)
class Source:
    """Where expression is read: a ``layer``, ``adata.raw`` (``use_raw``) or ``X``."""

    layer: str | None = None
    use_raw: bool = False

    def __post_init__(self):
        if self.layer is not None and self.use_raw:
            raise InputError("give layer= or use_raw=True, not both")

    @property
    def what(self) -> str:
        if self.use_raw:
            return "adata.raw.X"
        return "adata.X" if self.layer is None else f"adata.layers[{self.layer!r}]"

    def present(self, adata: ad.AnnData) -> bool:
        if self.use_raw:
            return adata.raw is not None
        return self.layer is None or self.layer in adata.layers


def matrix(adata: ad.AnnData, source: Source) -> tuple[object, pd.Index]:
    """The matrix of ``source`` and its gene names (``adata.raw`` has its own genes)."""
    if source.use_raw:
        if adata.raw is None:
            raise InputError("use_raw=True but adata.raw is empty")
        return adata.raw.X, pd.Index(adata.raw.var_names)
    if source.layer is None:
        return adata.X, pd.Index(adata.var_names)
    if source.layer not in adata.layers:
        raise InputError(
            f"layer {source.layer!r} not found; layers: {list(adata.layers.keys())} "
            "(pass layer=None to read X)"
        )
    return adata.layers[source.layer], pd.Index(adata.var_names)


def detect(adata: ad.AnnData, source: Source) -> InputInfo:
    """What ``source`` holds (:func:`rnadiff.data._inputs.detect_input`); for ``X``, scanpy's
    record ``uns['log1p']`` (written by ``sc.pp.log1p``) settles the log base of log-like
    values that the data alone cannot."""
    M, _ = matrix(adata, source)
    info = detect_input(M)
    record = adata.uns.get("log1p") if source.layer is None and not source.use_raw else None
    if record is None or info.kind == "counts" or info.max_value >= 30:
        return info
    base = record.get("base") if isinstance(record, dict) else None
    base = "e" if base is None else float(base)
    if base != "e" and not base > 1:
        return info
    base = int(base) if base in (2.0, 10.0) else base
    name = "natural log" if base == "e" else f"log base {base:g}"
    return dataclasses.replace(
        info,
        kind="lognorm",
        log_base=base,
        ambiguous=None,
        description=f"Log-normalized values ({name}, as uns['log1p'] records; max "
        f"{info.max_value:.3g}): rnadiff "
        + ("uses them as they are." if base == "e" else "converts them to natural log."),
    )


def columns(names: pd.Index, genes, what: str) -> np.ndarray:
    """Positions of ``genes`` in ``names``; missing genes are an error naming ``what``."""
    pos = names.get_indexer(list(genes))
    if (pos < 0).any():
        missing = [g for g, p in zip(genes, pos, strict=True) if p < 0]
        raise InputError(f"{len(missing)} genes are missing from {what} (e.g. {missing[:5]})")
    return pos


def choose_source(
    adata: ad.AnnData, *, layer: str | None = None, use_raw: bool = False
) -> tuple[Source, InputInfo]:
    """The source to read and what it holds.

    With neither ``layer`` nor ``use_raw``, ``X`` is read unless it holds log-normalized or
    normalized values and raw counts sit beside it (a layer of :data:`COUNT_LAYERS`, or
    ``adata.raw`` with integer counts and every gene of ``X``): then those counts are read,
    which is logged.
    """
    source = Source(layer=layer, use_raw=use_raw)
    info = detect(adata, source)
    if layer is not None or use_raw or info.kind == "counts":
        return source, info
    for name in COUNT_LAYERS:
        if name in adata.layers:
            found = detect_input(adata.layers[name])
            if found.kind == "counts" and found.ambiguous is None:
                logger.info(
                    "rnadiff: adata.X holds %s values; reading the raw counts in "
                    "adata.layers[%r] instead (pass layer=... to choose)",
                    info.kind,
                    name,
                )
                return Source(layer=name), found
    if adata.raw is not None and adata.var_names.isin(adata.raw.var_names).all():
        found = detect_input(adata.raw.X)
        if found.kind == "counts" and found.ambiguous is None:
            logger.info(
                "rnadiff: adata.X holds %s values; reading the raw counts in adata.raw "
                "instead (pass use_raw=False with layer=... to choose)",
                info.kind,
            )
            return Source(use_raw=True), found
    return source, info
