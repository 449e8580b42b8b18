"""The denoising benchmark's scVI baseline (``benchmarks/_denoise_tasks.py``): run in its own
venv on arrays, reported as not run (never a crash) when that venv is missing or fails."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import _denoise_tasks as dt  # noqa: E402
import _reports  # noqa: E402

from rnadiff.evaluation import _denoise as den  # noqa: E402

SCVI_PYTHON = ROOT / ".peers" / "scvi" / "bin" / "python"


@pytest.fixture
def counts():
    """Two kinds of cells, 30 genes, a few hundred UMIs each."""
    rng = np.random.default_rng(0)
    profile = rng.dirichlet(np.ones(30), size=2)
    kind = np.repeat([0, 1], 40)
    return rng.poisson(profile[kind] * 300), kind


@pytest.fixture
def quick(monkeypatch):
    """The in-process methods cut to the normalized counts (the others are tested apart)."""
    monkeypatch.setattr(dt, "_methods", lambda seed: {"normalized": den.normalized})


def test_missing_venv_is_reported_as_not_run(counts, quick, tmp_path, monkeypatch):
    monkeypatch.setenv("RNADIFF_PEERS_DIR", str(tmp_path / "none"))
    x, kind = counts
    rows, times = dt.denoise_rows("t", x, labels=kind, has_truth=True, seed=0)
    assert dt.SCVI not in set(rows.method)
    assert {"mcv_loss", "gene_gene_corr", "ari"} <= set(rows[rows.method == "normalized"].metric)
    (note,) = times.loc[times.method == dt.SCVI, "note"]
    assert note.startswith("not run (venv missing")
    summary = _reports.with_method_info(
        rows.assign(task="t")
        .groupby(["task", "method", "metric"])["value"]
        .agg(mean="mean", sd="std", n="count")
        .reset_index(),
        times.assign(task="t"),
    )
    (line,) = summary[summary.method == dt.SCVI].itertuples()
    assert line.metric == "not run" and "venv missing" in line.note


def test_a_failing_run_is_reported_with_its_reason(counts, quick, tmp_path, monkeypatch):
    python = tmp_path / "scvi" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\necho 'ValueError: no luck' >&2\nexit 3\n")
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("RNADIFF_PEERS_DIR", str(tmp_path))
    x, _ = counts
    rows, times = dt.denoise_rows("t", x, has_truth=False, seed=0)
    assert set(rows.method) == {"normalized"}
    (note,) = times.loc[times.method == dt.SCVI, "note"]
    assert note == "not run (scvi failed, exit 3: ValueError: no luck)"


@pytest.mark.skipif(not SCVI_PYTHON.exists(), reason="scVI venv not installed")
def test_scvi_denoises_every_matrix_it_is_given(counts, monkeypatch):
    """One runner process, one fit per matrix: expression per 1e4 of each matrix's cells, and
    the budget, version and ELBO of the fits in the timings row."""
    monkeypatch.delenv("RNADIFF_PEERS_DIR", raising=False)
    x, _ = counts
    matrices = [x, x[:50, :20]]
    out, timing = dt.scvi_expression(matrices, seed=0, max_steps=20)
    assert [e.shape for e in out] == [m.shape for m in matrices]
    for e in out:
        assert (e >= 0).all()
        np.testing.assert_allclose(e.sum(1), 1e4, rtol=1e-4)
    assert timing["version"].startswith("scvi-tools")
    assert timing["epochs"] == "20"  # 20 steps, one batch of 128 per epoch at these sizes
    assert len(timing["elbo_last"].split(";")) == 2


def test_scvi_rows_carry_its_method_name(counts, quick, monkeypatch):
    """With scVI's output in hand, its rows are scored like every other method's."""
    x, kind = counts

    def fake(matrices, *, seed, max_steps=dt.SCVI_MAX_STEPS):
        return [den.normalized(m) for m in matrices], {"method": dt.SCVI, "fold": "all"}

    monkeypatch.setattr(dt, "scvi_expression", fake)
    rows, _ = dt.denoise_rows("t", x, labels=kind, has_truth=True, seed=0)
    wide = rows.pivot_table(index=["evaluation", "metric"], columns="method", values="value")
    pd.testing.assert_series_equal(wide[dt.SCVI], wide["normalized"], check_names=False)


def _programs(n_cells=3000, n_genes=40, depth=400, seed=0):
    """Cells whose expression follows two gene programs (known correlations), counted
    shallowly: (expression per 1e4, counts)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n_cells, 2))
    loadings = rng.normal(scale=0.6, size=(2, n_genes))
    base = rng.normal(0.0, 0.8, size=n_genes)
    lam = np.exp(base + z @ loadings)
    expression = lam / lam.sum(1, keepdims=True) * 1e4
    counts = rng.poisson(expression * depth / 1e4)
    return expression, counts


def test_noise_corrected_correlations_undo_the_counting_noise():
    expression, counts = _programs()
    truth = np.corrcoef(expression.T)
    corrected, usable = den.noise_corrected_correlations(counts)
    naive = np.corrcoef(den.normalized(counts).T)
    iu = np.triu_indices(counts.shape[1], k=1)
    keep = usable[iu[0]] & usable[iu[1]]
    error = np.abs(corrected[iu][keep] - truth[iu][keep]).mean()
    assert error < 0.5 * np.abs(naive[iu][keep] - truth[iu][keep]).mean()  # naive: attenuated
    assert usable.mean() > 0.8


def test_mcv_gene_gene_recovery_rewards_the_expression_not_the_noise():
    expression, counts = _programs(seed=1)
    half, other = den.mcv_split(counts, seed=0)
    exact = den.gene_correlation_recovery_mcv(expression, other)
    noisy = den.gene_correlation_recovery_mcv(den.normalized(half), other)
    rng = np.random.default_rng(0)
    shuffled = den.gene_correlation_recovery_mcv(
        expression[:, rng.permutation(expression.shape[1])], other
    )
    assert exact > 0.9 and exact > noisy + 0.1 and abs(shuffled) < 0.5
    assert np.isnan(den.gene_correlation_recovery_mcv(expression[:, :2], other[:, :2]))
