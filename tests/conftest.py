"""Shared fixtures: small slices of the real data sets in the shared data folder.

The data live beside the repository (``../shared/data``, or ``$RNADIFF_DATA_DIR``) and are never
copied into it; tests that need them are skipped when the folder is absent. Each test gets its own
``.copy()`` of a slice, so no test can change what another one sees.
"""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

from rnadiff import ModelConfig, NetworkConfig, PreprocessConfig

KANG_FILE = "kang2018_ifnb_pbmc_counts.h5ad"
NORMAN_FILE = "norman2019_tiny_counts.h5ad"
KANG_CELLS_PER_GROUP = 40  # cells per cluster_id x group_id (5 cell types x ctrl/stim)
KANG_GENES = 300  # most expressed genes of the slice


def real_data_dir() -> Path:
    """The folder of the real data sets: ``$RNADIFF_DATA_DIR``, else ``../shared/data``."""
    env = os.environ.get("RNADIFF_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def real_data_file(name: str) -> Path:
    """Path of one real data file; skips the test when it is not there."""
    path = real_data_dir() / name
    if not path.is_file():
        pytest.skip(f"real data file {name} not found in {real_data_dir()} (set RNADIFF_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def data_file():
    """``data_file(name)``: path of a real data file, skipping the test when it is absent."""
    return real_data_file


@pytest.fixture(scope="session")
def _kang_small_session() -> ad.AnnData:
    adata = ad.read_h5ad(real_data_file(KANG_FILE))
    rng = np.random.default_rng(0)
    groups = adata.obs.groupby(["cluster_id", "group_id"], observed=True).indices
    cells = np.sort(
        np.concatenate(
            [rng.choice(idx, KANG_CELLS_PER_GROUP, replace=False) for idx in groups.values()]
        )
    )
    sub = adata[cells]
    totals = np.asarray(sub.X.sum(axis=0)).ravel()
    genes = np.sort(np.argsort(-totals, kind="stable")[:KANG_GENES])
    return sub[:, genes].copy()


@pytest.fixture(scope="session")
def kang_per_group():
    """``kang_per_group(n)``: Kang 2018 with at most ``n`` seeded cells per cell type x
    condition and every gene (a new AnnData on each call)."""

    def make(n: int) -> ad.AnnData:
        adata = ad.read_h5ad(real_data_file(KANG_FILE))
        rng = np.random.default_rng(0)
        keep = []
        groups = adata.obs.groupby(["cluster_id", "group_id"], observed=True).indices
        for idx in groups.values():
            keep.extend(rng.choice(idx, size=min(len(idx), n), replace=False))
        return adata[np.sort(keep)].copy()

    return make


@pytest.fixture
def kang_small(_kang_small_session) -> ad.AnnData:
    """400 Kang 2018 PBMCs (40 per cell type x ctrl/stim) x 300 genes; X raw counts (sparse).

    obs: ``group_id`` (ctrl/stim), ``cluster_id`` (5 cell types), ``sample_id``, ``tsne1/2``;
    ``layers['logcounts']`` the published log-normalized values. A fresh copy for every test.
    """
    return _kang_small_session.copy()


@pytest.fixture(scope="session")
def _norman_tiny_session() -> ad.AnnData:
    return ad.read_h5ad(real_data_file(NORMAN_FILE))


@pytest.fixture
def norman_tiny(_norman_tiny_session) -> ad.AnnData:
    """Norman 2019, 50 cells x 50 genes: X log-normalized (sparse), ``layers['counts']`` raw.

    obs ``condition``: ``ctrl`` (6 cells), singles written ``GENE+ctrl``/``ctrl+GENE`` and
    double perturbations ``A+B``. A fresh copy for every test.
    """
    return _norman_tiny_session.copy()


@pytest.fixture
def tiny_model_config() -> ModelConfig:
    """A model small enough to build (and train a few steps) in well under a second."""
    return ModelConfig(
        network=NetworkConfig(width=32, depth=1, emb_dim=16),
        preprocess=PreprocessConfig(n_top_genes=100),
    )


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tiny networks on one thread: thread start-up costs more than it saves."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
