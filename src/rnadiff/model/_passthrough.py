"""Genes the model does not model still reach every output.

A model may leave input genes out (above ``n_top_genes``, or outside ``genes=`` or
``var['highly_variable']``). Outputs carry every input gene all the same: a cell predicted from
a source cell keeps that cell's values of the unmodelled genes (no change is predicted for
them), and a generated cell gets its condition's mean in the training cells. This module keeps
those training means: one row per measured condition (every registered covariate), with the
number of cells, so that a partly specified or unmeasured condition averages the conditions
that match it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from rnadiff.conditioning import _conditions as conditions
from rnadiff.data._covariates import CovariateRegistry

logger = logging.getLogger("rnadiff")
MAX_VALUES = 2**25  # condition means kept at most (128 MB); beyond, the overall mean only


@dataclass
class Passthrough:
    """Training means of the unmodelled genes per measured condition.

    Attributes
    ----------
    genes
        The unmodelled genes, in output order.
    table
        One row per condition: the registered covariates (canonical values) and ``n_cells``.
    means
        ``(n_conditions, n_genes)`` mean log expression of each condition's cells.
    overall
        ``(n_genes,)`` mean over all training cells.
    """

    genes: tuple[str, ...]
    table: pd.DataFrame
    means: np.ndarray
    overall: np.ndarray

    @classmethod
    def fit(cls, registry: CovariateRegistry, obs: pd.DataFrame, log_chunks, genes) -> Passthrough:
        """Means of ``genes`` per condition of ``obs``; ``log_chunks`` yields ``(rows, log
        values of genes)`` over the training cells."""
        genes = tuple(genes)
        columns = conditions.condition_columns(registry, obs)
        labels = conditions.row_keys(list(columns.values()), len(obs))
        codes, uniques = pd.factorize(pd.Series(labels, dtype=object))
        n_groups = len(uniques)
        if n_groups * max(len(genes), 1) > MAX_VALUES:
            logger.info(
                "rnadiff: %d conditions x %d unmodelled genes: generated cells get their "
                "overall training mean",
                n_groups,
                len(genes),
            )
            codes, n_groups = np.zeros(len(obs), dtype=np.int64), 1
        member = sp.csr_matrix(
            (np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(n_groups, len(codes))
        )
        sums = np.zeros((n_groups, len(genes)))
        for rows, values in log_chunks:
            sums += member[:, rows] @ values.astype(np.float64)
        counts = np.bincount(codes, minlength=n_groups)
        first = np.array([np.flatnonzero(codes == g)[0] for g in range(n_groups)])
        table = pd.DataFrame({k: v[first] for k, v in columns.items()}) if n_groups > 1 else None
        if table is None:
            table = pd.DataFrame(index=range(1))
        table["n_cells"] = counts
        overall = sums.sum(0) / max(len(obs), 1)
        return cls(genes, table, (sums / counts[:, None]).astype(np.float32), overall)

    def for_conditions(self, registry: CovariateRegistry, obs: pd.DataFrame) -> np.ndarray:
        """``(n_cells, n_genes)``: each cell's condition mean (see the module docstring)."""
        out = np.empty((len(obs), len(self.genes)), dtype=np.float32)
        if not len(self.genes):
            return out
        columns = conditions.condition_columns(registry, obs)
        keys = conditions.row_keys(list(columns.values()), len(obs))
        codes, uniques = pd.factorize(pd.Series(keys, dtype=object))
        pkey = registry.perturbation_key
        for u in range(len(uniques)):
            i = int(np.flatnonzero(codes == u)[0])
            wanted = {k: v[i] for k, v in columns.items() if pd.notna(v[i])}
            rows = self._matching(wanted)
            if not rows.any():  # an unmeasured condition: its context, then everything
                wanted = {k: v for k, v in wanted.items() if k != pkey and registry[k].categorical}
                rows = self._matching(wanted)
            w = self.table["n_cells"].to_numpy(np.float64) * rows
            mean = self.overall if w.sum() == 0 else (w @ self.means) / w.sum()
            out[codes == u] = mean
        return out

    def _matching(self, wanted: dict) -> np.ndarray:
        rows = np.ones(len(self.table), dtype=bool)
        for key, value in wanted.items():
            if key not in self.table:
                continue
            column = self.table[key].to_numpy()
            if isinstance(value, float):
                rows &= np.isclose(column.astype(np.float64), value, rtol=1e-6, atol=1e-9)
            else:
                rows &= column == value
        return rows

    def to_json(self) -> dict:
        table = self.table.astype(object).where(self.table.notna(), None)
        return {"genes": list(self.genes), "table": table.to_dict(orient="list")}

    @classmethod
    def from_json(cls, d: dict, means: np.ndarray, overall: np.ndarray) -> Passthrough:
        return cls(tuple(d["genes"]), pd.DataFrame(d["table"]), means, overall)
