"""Denoising with a model trained on other cells of the same kind (real Kang 2018 slice)."""

import logging

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from rnadiff import ModelConfig, NetworkConfig, PreprocessConfig, RNADiffusion, TrainConfig
from rnadiff._errors import InputError
from rnadiff.data._preprocessing import log_expression

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def split(kang_per_group):
    """Control cells: a model trained on most of them, and held-out cells to denoise."""
    kang = kang_per_group(60)
    ctrl = kang[(kang.obs.group_id == "ctrl").to_numpy()].copy()
    rng = np.random.default_rng(0)
    held = np.zeros(ctrl.n_obs, dtype=bool)
    held[rng.choice(ctrl.n_obs, 40, replace=False)] = True
    train = ctrl[~held].copy()
    RNADiffusion.setup_anndata(train, cell_type_key="cluster_id")
    config = ModelConfig(
        preprocess=PreprocessConfig(n_top_genes=200),
        network=NetworkConfig(width=128, depth=2, emb_dim=32),
    )
    model = RNADiffusion(train, config=config, seed=0)
    model.train(config=TrainConfig(max_steps=300, calibration_cells=0), progress=False)
    return model, ctrl[held].copy()


def _thinned(adata: ad.AnnData, rate: float, seed: int = 0) -> ad.AnnData:
    x = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    kept = np.random.default_rng(seed).binomial(x.astype(np.int64), rate).astype(np.float32)
    return ad.AnnData(X=sp.csr_matrix(kept), obs=adata.obs.copy(), var=adata.var.copy())


def _cell_pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([np.corrcoef(x, y)[0, 1] for x, y in zip(a, b, strict=True)]))


def test_denoising_brings_thinned_cells_closer_to_their_originals(split):
    model, held = split
    truth = log_expression(held, model.preprocess)  # the held-out cells at full depth
    shallow = _thinned(held, 0.3)
    noisy = log_expression(shallow, model.preprocess)
    clean = model.denoise(shallow, sigma=0.5, progress=False)[:, model.genes].X
    # measured: per-cell Pearson 0.765 -> 0.797, mean squared error 0.685 -> 0.541
    assert _cell_pearson(clean, truth) > _cell_pearson(noisy, truth) + 0.015
    assert ((clean - truth) ** 2).mean() < 0.9 * ((noisy - truth) ** 2).mean()


def test_denoise_keeps_the_cells_and_leaves_the_input_alone(split):
    model, held = split
    cells = held.copy()
    cells.obs["note"] = "kept"
    before = cells.X.copy()
    out = model.denoise(cells, sigma=0.5, progress=False)
    assert out.shape == cells.shape  # every gene: the unmodelled ones as they were
    assert list(out.var_names) == list(cells.var_names)
    others = ~out.var["rnadiff_modelled"].to_numpy()
    assert others.sum() == cells.n_vars - len(model.genes)
    np.testing.assert_allclose(
        out.X[:, others],
        log_expression(cells, model.preprocess, genes=out.var_names[others]),
        rtol=1e-6,
    )
    assert out.uns["log1p"] == {"base": None}
    assert list(out.obs_names) == list(cells.obs_names)
    assert (out.obs["note"] == "kept").all()
    assert (out.obs["cluster_id"].astype(str) == cells.obs["cluster_id"].astype(str)).all()
    assert out.uns["rnadiff"]["method"] == "denoise" and out.uns["rnadiff"]["sigma"] == 0.5
    assert np.isfinite(out.X).all() and (out.X >= 0).all()
    assert (cells.X != before).nnz == 0


def test_denoising_strength_grows_with_sigma(split):
    model, held = split
    x = log_expression(held, model.preprocess)
    near = model.denoise(held, sigma=0.002, progress=False)[:, model.genes].X
    # at a tiny noise level the denoiser returns the cell itself (up to the clip at 0)
    assert np.abs(near - x).max() < 0.05
    spread = [
        model.denoise(held, sigma=s, progress=False)[:, model.genes].X.var(axis=0).sum()
        for s in (0.3, 1.0, 5.0)
    ]
    assert spread[0] > spread[1] > spread[2]  # pulled ever harder towards typical profiles
    # the batch size does not change the result
    a = model.denoise(held, sigma=1.0, batch_size=7, progress=False).X
    b = model.denoise(held, sigma=1.0, progress=False).X
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("sigma", [0, -1, float("nan"), float("inf")])
def test_denoise_rejects_a_bad_sigma(split, sigma):
    model, held = split
    with pytest.raises(InputError, match="sigma must be a positive number"):
        model.denoise(held, sigma=sigma, progress=False)


def test_denoise_errors_are_specific(split):
    model, held = split
    with pytest.raises(InputError, match="genes do not match the model"):
        model.denoise(held[:, [g for g in held.var_names if g != model.genes[3]]], progress=False)
    odd = held.copy()
    odd.obs["cluster_id"] = "Neurons"
    with pytest.raises(InputError, match="unknown value 'Neurons'"):
        model.denoise(odd, progress=False)
    with pytest.raises(InputError, match="batch_size"):
        model.denoise(held, batch_size=0, progress=False)


def test_auto_sigma_follows_each_cells_depth(split, caplog):
    model, held = split
    truth = log_expression(held, model.preprocess)
    shallow = _thinned(held, 0.2)
    out = model.denoise(shallow, progress=False)  # sigma="auto" by default
    sig = out.obs["rnadiff_sigma"].to_numpy()
    assert out.uns["rnadiff"]["sigma"] == "auto"
    assert out.uns["rnadiff"]["sigma_median"] == pytest.approx(np.median(sig))
    # shallower cells carry more counting noise: the level falls with each cell's depth
    depth = np.asarray(shallow.X.sum(axis=1)).ravel()
    assert np.corrcoef(np.log(depth), sig)[0, 1] < -0.9
    # cells at the training depth keep (almost) all they have, and the user is told
    with caplog.at_level(logging.WARNING, logger="rnadiff"):
        full = model.denoise(held, progress=False).obs["rnadiff_sigma"].to_numpy()
    assert np.median(full) < 0.5 * np.median(sig)
    assert "about as deep as the training cells" in caplog.text
    noisy = log_expression(shallow, model.preprocess)
    assert _cell_pearson(out[:, model.genes].X, truth) > _cell_pearson(noisy, truth) + 0.015


def test_auto_sigma_survives_save_and_load(split, tmp_path):
    model, held = split
    model.save(tmp_path / "m")
    loaded = RNADiffusion.load(tmp_path / "m")
    assert loaded.preprocess.depth == model.preprocess.depth
    np.testing.assert_array_equal(loaded.preprocess.expr_mean, model.preprocess.expr_mean)
    shallow = _thinned(held, 0.3)
    np.testing.assert_allclose(
        loaded.denoise(shallow, progress=False).X, model.denoise(shallow, progress=False).X
    )


def test_auto_sigma_needs_counts(split, kang_per_group):
    model, held = split
    x = held.X.toarray()
    rescaled = ad.AnnData(X=x * 1.37 + 0.01, obs=held.obs.copy(), var=held.var.copy())
    with pytest.raises(InputError, match="needs raw counts"):  # normalized, not counts
        model.denoise(rescaled, progress=False)
    assert model.denoise(rescaled, sigma=0.5, progress=False).n_obs == held.n_obs
    # a model trained on log-normalized values has no depths to go by
    kang = kang_per_group(20)
    logged = ad.AnnData(X=log_expression(kang, model.preprocess), obs=kang.obs.copy())
    logged.var_names = model.genes
    RNADiffusion.setup_anndata(logged, cell_type_key="cluster_id")
    other = RNADiffusion(logged, config=ModelConfig(network=NetworkConfig(width=16, depth=1)))
    assert other.preprocess.depth is None and other.preprocess.expr_mean is None
    with pytest.raises(InputError, match="trained on raw counts"):
        other.denoise(logged, progress=False)
    assert other.denoise(logged, sigma=0.5, progress=False).n_obs == logged.n_obs
    with pytest.raises(InputError, match="or 'auto'"):
        model.denoise(held, sigma="strong", progress=False)


def test_auto_sigma_says_when_a_saved_model_lacks_the_depth(split, tmp_path):
    import json

    model, held = split
    model.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["preprocess"].pop("depth")  # as saved by an rnadiff without depth statistics
    config["version"] = 1  # ... before checkpoints had a manifest of hashes
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    (tmp_path / "m" / "manifest.json").unlink()
    old = RNADiffusion.load(tmp_path / "m")
    with pytest.raises(InputError, match="saved without"):
        old.denoise(held, progress=False)
    assert old.denoise(held, sigma=1.0, progress=False).n_obs == held.n_obs


def test_training_with_count_thinning_denoises_shallow_cells_better(split):
    model, held = split
    thinned = RNADiffusion(model.adata, config=model.config, seed=0)
    thinned.train(
        config=TrainConfig(max_steps=300, calibration_cells=0, thinning=0.5), progress=False
    )
    truth = log_expression(held, model.preprocess)
    for rate in (0.1, 0.3):
        shallow = _thinned(held, rate, seed=1)
        plain = _cell_pearson(model.denoise(shallow, progress=False)[:, model.genes].X, truth)
        better = _cell_pearson(thinned.denoise(shallow, progress=False)[:, model.genes].X, truth)
        # measured: 0.697 -> 0.735 at 10% of the counts, 0.789 -> 0.798 at 30%
        assert better > plain


def test_thinning_needs_counts(kang_per_group):
    kang = kang_per_group(10)
    logged = ad.AnnData(X=np.log1p(kang.X.toarray()), obs=kang.obs.copy(), var=kang.var.copy())
    RNADiffusion.setup_anndata(logged, cell_type_key="cluster_id")
    model = RNADiffusion(logged, config=ModelConfig(network=NetworkConfig(width=16, depth=1)))
    with pytest.raises(InputError, match="thinning needs raw counts"):
        model.train(config=TrainConfig(max_steps=2, thinning=0.5), progress=False)
    with pytest.raises(InputError, match="thinning must be in"):
        TrainConfig(thinning=1.5)


def test_denoise_in_place_adds_a_layer_and_overwrites_nothing(split):
    model, held = split
    cells = held.copy()
    before = cells.X.copy()
    assert model.denoise(cells, sigma=0.5, inplace=True, progress=False) is None
    layer = cells.layers["rnadiff_denoised"]
    assert layer.shape == cells.shape and (cells.X != before).nnz == 0
    alone = model.denoise(held, sigma=0.5, progress=False)
    np.testing.assert_allclose(layer, alone[:, cells.var_names].X, rtol=1e-6)
    assert cells.uns["rnadiff_denoised"]["sigma"] == 0.5
    assert "rnadiff_denoised_sigma" in cells.obs
    with pytest.raises(InputError, match="exists"):
        model.denoise(cells, sigma=0.5, inplace=True, progress=False)
