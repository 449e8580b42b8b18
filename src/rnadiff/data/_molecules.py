"""Molecules as the model sees them: SMILES checked by RDKit and turned into Morgan fingerprints.

A perturbation covariate can hold drugs. Their structures come from an ``obs`` column of SMILES
or from a ``{name: SMILES}`` table; each drug's Morgan fingerprint (Rogers & Hahn 2010; radius
2, 2048 bits, as chemCPA) is the input of a learned projection
(:class:`rnadiff.conditioning.PerturbationEmbedding`), so a drug never seen in training gets an
embedding from its structure.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from rnadiff._errors import InputError

__all__ = ["FP_BITS", "fingerprints", "morgan_fingerprint", "read_smiles_table", "tanimoto"]

logger = logging.getLogger("rnadiff")

FP_BITS = 2048  # Morgan fingerprint length (radius 2), as chemCPA
FP_RADIUS = 2


@lru_cache(maxsize=4096)
def _fingerprint(smiles: str, radius: int, bits: int) -> bytes | None:
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdFingerprintGenerator

    RDLogger.DisableLog("rdApp.*")  # a bad SMILES is reported by our own error
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=bits)
    return generator.GetFingerprintAsNumPy(mol).astype(np.uint8).tobytes()


def morgan_fingerprint(
    smiles: str, *, radius: int = FP_RADIUS, bits: int = FP_BITS, name: str | None = None
) -> np.ndarray:
    """Morgan fingerprint of one molecule as a 0/1 ``uint8`` vector.

    Parameters
    ----------
    smiles
        The molecule.
    radius, bits
        Radius of the circular environments and length of the folded fingerprint.
    name
        The drug's name, for the error message.

    Returns
    -------
    numpy.ndarray
        Shape ``(bits,)``.
    """
    fp = _fingerprint(str(smiles), radius, bits) if isinstance(smiles, str) and smiles else None
    if fp is None:
        who = f" of {name!r}" if name is not None else ""
        raise InputError(f"RDKit cannot parse the SMILES{who}: {smiles!r}")
    return np.frombuffer(fp, dtype=np.uint8).copy()


def fingerprints(
    table: Mapping[str, str], names: Iterable[str], *, radius: int = FP_RADIUS, bits: int = FP_BITS
) -> np.ndarray:
    """Fingerprints of ``names`` (float32 ``(n, bits)``) from ``table`` (``{name: SMILES}``);
    a name without SMILES gets a row of zeros."""
    names = list(names)
    out = np.zeros((len(names), bits), dtype=np.float32)
    for i, name in enumerate(names):
        if name in table:
            out[i] = morgan_fingerprint(table[name], radius=radius, bits=bits, name=name)
    return out


def tanimoto(a: np.ndarray, b: np.ndarray) -> float:
    """Tanimoto (Jaccard) similarity of two binary fingerprints: ``|a & b| / |a | b|``."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 1.0


def tanimoto_matrix(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Tanimoto similarity of every row of ``a`` with every row of ``b`` (binary rows;
    ``b=None``: ``a`` with itself)."""
    b = a if b is None else b
    a, b = np.asarray(a, dtype=np.float64) > 0, np.asarray(b, dtype=np.float64) > 0
    a, b = a.astype(np.float64), b.astype(np.float64)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def check_table(table: Mapping[str, str], *, what: str = "smiles") -> dict[str, str]:
    """``{name: SMILES}`` with every SMILES parsed by RDKit (an error names the first drug
    whose SMILES does not parse); empty SMILES are left out."""
    if not isinstance(table, Mapping):
        raise InputError(f"{what} must be a mapping of names to SMILES, got {type(table).__name__}")
    out = {}
    for name, smiles in table.items():
        if smiles is None or (isinstance(smiles, float) and np.isnan(smiles)) or smiles == "":
            continue
        if not isinstance(smiles, str):
            raise InputError(f"{what}: the SMILES of {name!r} is not text: {smiles!r}")
        morgan_fingerprint(smiles, name=str(name))  # raises with the drug's name
        out[str(name)] = smiles
    return out


def table_from_obs(
    obs: pd.DataFrame, key: str, smiles_key: str, *, parts, control: str | None
) -> dict[str, str]:
    """``{perturbation: SMILES}`` read from the column ``smiles_key`` beside ``key``.

    Rows of one perturbation (not the control) give its SMILES; a combination's row holds
    its parts' SMILES joined by ``"."`` in the order of the parts, used for parts that have
    no row of their own. Conflicting SMILES for one name are an error; rows with an empty
    SMILES are skipped (a drug with none has no structure: it is learned by name)."""
    if smiles_key not in obs.columns:
        raise InputError(f"smiles_key {smiles_key!r} is not a column of obs")
    table: dict[str, str] = {}
    pairs = obs[[key, smiles_key]].astype(str).drop_duplicates()
    combos = []
    for value, smiles in pairs.itertuples(index=False):
        if smiles in ("", "nan", "None") or value == control:
            continue
        names = parts(value)
        if len(names) > 1:
            combos.append((names, smiles))
            continue
        name = names[0]
        if table.get(name, smiles) != smiles:
            raise InputError(
                f"perturbation {name!r} has two SMILES in column {smiles_key!r}: "
                f"{table[name]!r} and {smiles!r}"
            )
        table[name] = smiles
    for names, smiles in combos:
        pieces = smiles.split(".")
        if len(pieces) == len(names):
            for name, piece in zip(names, pieces, strict=True):
                table.setdefault(name, piece)
    return check_table(table, what=f"column {smiles_key!r}")


def read_smiles_table(path: str | Path) -> dict[str, str]:
    """A ``name,SMILES`` CSV (a header ``name,smiles`` is optional; further columns are
    ignored) as a checked ``{name: SMILES}`` table."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"SMILES table {str(path)!r} does not exist")
    frame = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
    if frame.shape[1] < 2:
        raise InputError(f"{path}: a SMILES table needs two columns, name and SMILES")
    first = [str(v).strip().lower() for v in frame.iloc[0, :2]]
    if first == ["name", "smiles"]:
        frame = frame.iloc[1:]
    table = dict(zip(frame.iloc[:, 0].str.strip(), frame.iloc[:, 1].str.strip(), strict=True))
    return check_table(table, what=str(path))
