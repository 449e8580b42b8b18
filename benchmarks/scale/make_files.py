"""Synthetic negative-binomial count files for the scale benchmark, written in chunks.

    .venv/bin/python benchmarks/scale/make_files.py [--sizes 10k,100k,1M,100k_20k]
        [--data benchmarks/results/scale/data] [--seed 0]

One transcriptome of 20,000 genes is drawn once per seed: log-normal gene rates, 5 cell types
and 19 perturbations (plus ``control``) that each change the rates of a few per cent of the
genes, and a gene-wise NB dispersion. A cell's library size over the whole transcriptome is
2k-5k counts (log-normal around 3,200). The 20,000-gene file holds every gene; the 2,000-gene
files hold a fixed random tenth of them, so their density matches the transcriptome's (~8%)
and their counts per cell are a tenth of the library (their ``obs['library_size']`` keeps the
whole). Cells are drawn and written a chunk at a time into anndata's on-disk CSR layout
(float32 counts), so the 1M-cell file is never held dense or even whole in memory. A file that
exists with the same shape, seed and generator version is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent / "results" / "scale" / "data"
VERSION = 1  # of the generator: a file of another version is made again
TRANSCRIPTOME = 20_000
N_CELL_TYPES = 5
N_PERTURBATIONS = 20  # including the control
CONTROL = "control"
PERTURBATION_KEY, CELL_TYPE_KEY = "perturbation", "cell_type"
CHUNK_ENTRIES = 20_000_000  # cells x genes drawn at once (~0.4 GB of working memory)
H5_CHUNK = 1 << 18  # elements per HDF5 chunk of data / indices (1 MiB)


@dataclass(frozen=True)
class Size:
    name: str
    n_cells: int
    n_genes: int


SIZES = {
    s.name: s
    for s in (
        Size("10k", 10_000, 2_000),
        Size("100k", 100_000, 2_000),
        Size("1M", 1_000_000, 2_000),
        Size("100k_20k", 100_000, 20_000),
    )
}


def parse_sizes(text: str) -> list[Size]:
    """``"10k,100k"`` -> the named sizes, in the order given."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in SIZES]
    if unknown:
        raise SystemExit(f"unknown size(s) {unknown}; known: {', '.join(SIZES)}")
    return [SIZES[n] for n in names]


def path_for(data: Path, size: Size) -> Path:
    return data / f"synthetic_{size.name}.h5ad"


class Transcriptome:
    """Rates of every (cell type, perturbation) pair over ``TRANSCRIPTOME`` genes."""

    def __init__(self, seed: int):
        rng = np.random.default_rng([seed, 0])
        base = rng.normal(0.0, 1.75, TRANSCRIPTOME)
        # each cell type changes 5% of the genes, each perturbation 2% (lfc ~ N(0, 1))
        cell_type = np.zeros((N_CELL_TYPES, TRANSCRIPTOME))
        for row in cell_type:
            hit = rng.choice(TRANSCRIPTOME, TRANSCRIPTOME // 20, replace=False)
            row[hit] = rng.normal(0.0, 1.0, hit.size)
        pert = np.zeros((N_PERTURBATIONS, TRANSCRIPTOME))  # row 0: the control
        for row in pert[1:]:
            hit = rng.choice(TRANSCRIPTOME, TRANSCRIPTOME // 50, replace=False)
            row[hit] = rng.normal(0.0, 1.0, hit.size)
        logits = base + cell_type[:, None, :] + pert[None, :, :]  # (types, perts, genes)
        rates = np.exp(logits - logits.max(axis=-1, keepdims=True))
        # share of a cell's library per gene, by group g = type * N_PERTURBATIONS + pert
        self.shares = (rates / rates.sum(axis=-1, keepdims=True)).reshape(-1, TRANSCRIPTOME)
        self.theta = 0.5 * np.exp(rng.normal(0.0, 0.5, TRANSCRIPTOME))  # NB dispersion
        self.subset = np.sort(rng.choice(TRANSCRIPTOME, 2_000, replace=False))

    def genes(self, n_genes: int) -> np.ndarray:
        if n_genes == TRANSCRIPTOME:
            return np.arange(TRANSCRIPTOME)
        if n_genes == self.subset.size:
            return self.subset
        raise ValueError(f"no gene set of {n_genes} genes")


def cells(size: Size, seed: int) -> pd.DataFrame:
    """obs: perturbation (control ~20% of cells), cell type, library size."""
    rng = np.random.default_rng([seed, 1, size.n_cells, size.n_genes])
    perts = [CONTROL] + [f"pert{i:02d}" for i in range(1, N_PERTURBATIONS)]
    weights = np.r_[0.2, np.full(N_PERTURBATIONS - 1, 0.8 / (N_PERTURBATIONS - 1))]
    p = rng.choice(N_PERTURBATIONS, size.n_cells, p=weights)
    t = rng.integers(0, N_CELL_TYPES, size.n_cells)
    library = np.clip(rng.lognormal(np.log(3200), 0.25, size.n_cells), 2000, 5000)
    obs = pd.DataFrame(
        {
            PERTURBATION_KEY: pd.Categorical.from_codes(p, perts),
            CELL_TYPE_KEY: pd.Categorical.from_codes(t, [f"type{i}" for i in range(5)]),
            "library_size": library.round().astype(np.float32),
        },
        index=pd.Index([f"cell{i:07d}" for i in range(size.n_cells)]),
    )
    obs["_group"] = t * N_PERTURBATIONS + p  # dropped before writing
    return obs


def draw_chunk(
    tx: Transcriptome, genes: np.ndarray, obs: pd.DataFrame, rng: np.random.Generator
) -> np.ndarray:
    """NB counts (gamma-Poisson) of ``obs``'s cells over ``genes``, dense (chunk x genes)."""
    shares = tx.shares[:, genes]  # genes first: a 100 x genes table, then one row per cell
    mu = shares[obs["_group"].to_numpy()] * obs["library_size"].to_numpy()[:, None]
    theta = tx.theta[genes]
    lam = rng.standard_gamma(theta, size=mu.shape) * (mu / theta)
    return rng.poisson(lam).astype(np.float32)


def existing_ok(path: Path, size: Size, seed: int) -> bool:
    """Whether ``path`` already holds this size, seed and generator version."""
    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as f:
            shape = tuple(f["X"].attrs["shape"])
            meta = json.loads(f.attrs.get("scale_benchmark", "{}"))
    except (OSError, KeyError, ValueError):
        return False
    return (
        shape == (size.n_cells, size.n_genes)
        and meta.get("seed") == seed
        and (meta.get("version") == VERSION)
    )


def write_file(path: Path, size: Size, seed: int, tx: Transcriptome) -> dict:
    """Write one file (a temporary file renamed at the end); returns its statistics."""
    t0 = time.perf_counter()
    genes = tx.genes(size.n_genes)
    obs = cells(size, seed)
    var = pd.DataFrame(index=pd.Index([f"gene{g:05d}" for g in genes]))
    tmp = path.with_suffix(".h5ad.tmp")
    ad.AnnData(obs=obs.drop(columns="_group"), var=var).write_h5ad(tmp)  # obs, var, uns...
    chunk = max(1, CHUNK_ENTRIES // size.n_genes)
    nnz, lib_sum, lib_sq = 0, 0.0, 0.0
    with h5py.File(tmp, "a") as f:
        x = f.create_group("X")
        x.attrs.update(
            {"encoding-type": "csr_matrix", "encoding-version": "0.1.0"}
            | {"shape": np.array([size.n_cells, size.n_genes])}
        )
        kw = dict(shape=(0,), maxshape=(None,), chunks=(H5_CHUNK,))
        data = x.create_dataset("data", dtype=np.float32, **kw)
        indices = x.create_dataset("indices", dtype=np.int32, **kw)
        indptr = x.create_dataset("indptr", shape=(size.n_cells + 1,), dtype=np.int64)
        indptr[0] = 0
        for i, start in enumerate(range(0, size.n_cells, chunk)):
            stop = min(start + chunk, size.n_cells)
            rng = np.random.default_rng([seed, 2, size.n_cells, size.n_genes, i])
            dense = draw_chunk(tx, genes, obs.iloc[start:stop], rng)
            rows, cols = np.nonzero(dense)
            values = dense[rows, cols]
            data.resize((nnz + values.size,))
            indices.resize((nnz + values.size,))
            data[nnz:], indices[nnz:] = values, cols.astype(np.int32)
            indptr[start + 1 : stop + 1] = nnz + np.cumsum(
                np.bincount(rows, minlength=stop - start)
            )
            nnz += values.size
            totals = dense.sum(axis=1, dtype=np.float64)
            lib_sum, lib_sq = lib_sum + totals.sum(), lib_sq + (totals**2).sum()
            del dense, rows, cols, values
        stats = {
            "name": size.name,
            "n_cells": size.n_cells,
            "n_genes": size.n_genes,
            "nnz": int(nnz),
            "density": nnz / (size.n_cells * size.n_genes),
            "counts_per_cell_mean": lib_sum / size.n_cells,
            "counts_per_cell_sd": float(
                np.sqrt(lib_sq / size.n_cells - (lib_sum / size.n_cells) ** 2)
            ),
            "library_size_mean": float(obs["library_size"].mean()),
            "seed": seed,
            "version": VERSION,
        }
        f.attrs["scale_benchmark"] = json.dumps(stats)
    os.replace(tmp, path)
    stats["seconds"] = time.perf_counter() - t0
    stats["bytes"] = path.stat().st_size
    return stats


def check_backed(path: Path, size: Size) -> None:
    """The file opens backed with anndata, with the right shape, and rows can be read."""
    a = ad.read_h5ad(path, backed="r")
    try:
        assert a.shape == (size.n_cells, size.n_genes), a.shape
        rows = a.X[[0, size.n_cells // 2, size.n_cells - 1]]
        assert rows.shape == (3, size.n_genes) and rows.sum() > 0
        assert a.obs[PERTURBATION_KEY].nunique() == N_PERTURBATIONS
    finally:
        a.file.close()


def make_files(sizes: list[Size], data: Path, *, seed: int = 0) -> dict[str, Path]:
    """Make the files of ``sizes`` under ``data`` (kept when present); returns name -> path."""
    data.mkdir(parents=True, exist_ok=True)
    tx = None
    paths, manifest_path = {}, data / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    for size in sizes:
        path = paths[size.name] = path_for(data, size)
        if existing_ok(path, size, seed):
            print(f"[make_files] {path.name}: present, kept", flush=True)
            continue
        tx = tx or Transcriptome(seed)
        print(f"[make_files] {path.name}: writing {size.n_cells} x {size.n_genes}", flush=True)
        stats = write_file(path, size, seed, tx)
        check_backed(path, size)
        manifest[size.name] = stats
        manifest_path.write_text(json.dumps(manifest, indent=1))
        print(
            f"[make_files] {path.name}: {stats['bytes'] / 2**20:.0f} MiB, density "
            f"{stats['density']:.3f}, {stats['counts_per_cell_mean']:.0f} counts per cell in "
            f"the file, {stats['seconds']:.0f} s",
            flush=True,
        )
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(SIZES), help=f"of {', '.join(SIZES)}")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="cache folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    make_files(parse_sizes(args.sizes), args.data, seed=args.seed)


if __name__ == "__main__":
    sys.exit(main())
