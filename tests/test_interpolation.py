"""Continuous covariates between measured values: the denoiser of the neighbours, mixed."""

import numpy as np
import pandas as pd
import pytest
import torch

from rnadiff import ModelConfig, NetworkConfig, PreprocessConfig, RNADiffusion, TrainConfig
from rnadiff.sampling import interpolated_covariate

pytestmark = pytest.mark.usefixtures("one_thread")


def test_interpolated_covariate_mixes_the_neighbouring_values():
    def denoiser(x, sigma, cond):  # nonlinear in the time t
        t = cond["t"][:, None]
        return x * torch.sin(t) + t**2

    x, sigma = torch.randn(3, 4), torch.ones(3)
    cond = {"t": torch.tensor([0.5, 0.5, 2.0])}
    low, high = torch.tensor([0.0, 0.0, 0.0]), torch.tensor([1.0, 1.0, 1.0])
    weight = torch.tensor([0.5, 0.25, 0.0])
    where = torch.tensor([True, True, False])
    out = interpolated_covariate(denoiser, key="t", low=low, high=high, weight=weight, where=where)(
        x, sigma, cond
    )
    at = {v: denoiser(x, sigma, {"t": torch.full((3,), v)}) for v in (0.0, 1.0)}
    torch.testing.assert_close(out[0], 0.5 * at[0.0][0] + 0.5 * at[1.0][0])
    torch.testing.assert_close(out[1], 0.75 * at[0.0][1] + 0.25 * at[1.0][1])
    torch.testing.assert_close(out[2], denoiser(x, sigma, cond)[2])  # not asked: untouched
    assert not torch.allclose(out[0], denoiser(x, sigma, cond)[0])


@pytest.fixture(scope="module")
def timed(kang_small_module):
    adata = kang_small_module
    rng = np.random.default_rng(0)
    adata.obs["Hours"] = rng.choice([0.0, 24.0, 72.0], size=adata.n_obs)
    RNADiffusion.setup_anndata(adata, time_key="Hours", cell_type_key="cluster_id")
    config = ModelConfig(
        preprocess=PreprocessConfig(n_top_genes=100),
        network=NetworkConfig(width=64, depth=1, emb_dim=16),
    )
    model = RNADiffusion(adata, config=config, seed=0)
    model.train(config=TrainConfig(max_steps=30, batch_size=64, seed=0), progress=False)
    return model


@pytest.fixture(scope="module")
def kang_small_module(_kang_small_session):
    return _kang_small_session.copy()


def test_measured_values_and_neighbours(timed, tmp_path):
    assert timed.measured == {"Hours": [0.0, 24.0, 72.0]}
    obs = pd.DataFrame({"Hours": [48.0, 24.0, 100.0, 12.0, np.nan]})
    ((key, (low, high, weight, where)),) = timed.engine.interpolation(obs).items()
    assert key == "Hours" and where.tolist() == [True, False, False, True, False]
    grid = pd.DataFrame({"Hours": [0.0, 24.0, 72.0]})
    enc = timed.registry.encode(grid, allow_missing=True)["Hours"]
    assert low[0] == pytest.approx(enc[1]) and high[0] == pytest.approx(enc[2])
    assert low[3] == pytest.approx(enc[0]) and high[3] == pytest.approx(enc[1])
    assert weight[0] == pytest.approx(0.5) and weight[3] == pytest.approx(0.5)
    timed.save(tmp_path / "m")
    assert RNADiffusion.load(tmp_path / "m").measured == timed.measured


def test_generation_between_time_points_uses_the_neighbours(timed):
    cond = {"Hours": 48.0, "cluster_id": "B cells"}
    mixed = timed.generate(cond, n_cells=8, steps=4, seed=1, progress=False)
    assert mixed.uns["rnadiff"]["interpolated_cells"] == {"Hours": 8}
    measured = timed.generate({**cond, "Hours": 24.0}, n_cells=8, steps=4, progress=False)
    assert measured.uns["rnadiff"]["interpolated_cells"] == {}
    saved, timed.measured = timed.measured, {}
    try:
        network_only = timed.generate(cond, n_cells=8, steps=4, seed=1, progress=False)
    finally:
        timed.measured = saved
    assert not np.allclose(mixed.X, network_only.X)


def test_ranking_likelihood_interpolates_between_time_points(_kang_small_session):
    adata = _kang_small_session.copy()
    rng = np.random.default_rng(0)
    adata.obs["Hours"] = rng.choice([0.0, 24.0, 72.0], size=adata.n_obs)
    RNADiffusion.setup_anndata(adata, perturbation_key="group_id", control="ctrl", time_key="Hours")
    config = ModelConfig(
        preprocess=PreprocessConfig(n_top_genes=100),
        network=NetworkConfig(width=64, depth=1, emb_dim=16),
    )
    model = RNADiffusion(adata, config=config, seed=0)
    model.train(config=TrainConfig(max_steps=30, batch_size=64, seed=0), progress=False)
    target = adata[:20].copy()
    target.obs["Hours"] = 48.0  # never measured: between 24 h and 72 h
    kw = dict(n_cells=8, n_noise_levels=3, n_draws=1, steps=4, progress=False)
    mixed = model.rank_perturbations(target, **kw).set_index("perturbation")
    saved, model.measured = model.measured, {}
    try:
        network_only = model.rank_perturbations(target, **kw).set_index("perturbation")
    finally:
        model.measured = saved
    for name in ("ctrl", "stim"):  # every candidate's likelihood uses the mixed denoiser
        assert mixed.loc[name, "denoising_error"] != network_only.loc[name, "denoising_error"]
    target.obs["Hours"] = 24.0  # measured: nothing to interpolate
    at_24 = model.rank_perturbations(target, **kw).set_index("perturbation")
    model.measured = {}
    try:
        at_24_network = model.rank_perturbations(target, **kw).set_index("perturbation")
    finally:
        model.measured = saved
    assert np.allclose(at_24["denoising_error"], at_24_network["denoising_error"])


def test_spread_pairs_of_a_time_course_are_neighbouring_times_both_ways(timed):
    train = timed.adata
    types = sorted(set(train.obs.cluster_id))
    before = timed.spread_scale
    try:
        table = timed.calibrate_spread(n_cells=30, min_cells=2)
        found = timed.spread_scale
        assert len(timed.calibrate_spread(n_cells=30, min_cells=2, max_pairs=3)) == 3
    finally:
        timed.spread_scale = before
    # per cell type: 0 <-> 24 and 24 <-> 72 h, never 0 <-> 72 h or across types
    assert len(table) == len(types) * 2 * 2
    for _, row in table.iterrows():
        src = dict(p.split("=") for p in row.source.split(", "))
        dst = dict(p.split("=") for p in row.target.split(", "))
        assert src["cluster_id"] == dst["cluster_id"]
        assert {float(src["Hours"]), float(dst["Hours"])} in ({0.0, 24.0}, {24.0, 72.0})
        same = (train.obs.Hours == float(src["Hours"])) & (
            train.obs.cluster_id == src["cluster_id"]
        )
        assert row.n_source == min(30, same.sum())
    assert found == pytest.approx(np.clip(table.ratio.mean(), 0.5, 2.0))
