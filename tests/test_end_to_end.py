"""From a slice of the real Kang 2018 data to a trained model, predictions and metrics."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from rnadiff import ModelConfig, NetworkConfig, PreprocessConfig, RNADiffusion, TrainConfig
from rnadiff._errors import InputError
from rnadiff.conditioning._calibration import spread_ratio, widen
from rnadiff.conditioning._conditions import condition_rows
from rnadiff.conditioning._transfer import distance_transfer_scale
from rnadiff.data._preprocessing import log_expression
from rnadiff.evaluation._metrics import response_metrics

HOLDOUT = "CD14+ Monocytes"


@pytest.fixture(scope="module")
def kang(kang_per_group):
    return kang_per_group(80)


@pytest.fixture(scope="module")
def trained(kang):
    held = (kang.obs.cluster_id == HOLDOUT) & (kang.obs.group_id == "stim")
    train = kang[~held.to_numpy()].copy()
    RNADiffusion.setup_anndata(
        train, perturbation_key="group_id", control="ctrl", cell_type_key="cluster_id"
    )
    config = ModelConfig(
        preprocess=PreprocessConfig(n_top_genes=300),
        network=NetworkConfig(width=128, depth=2, emb_dim=32),
    )
    model = RNADiffusion(train, config=config)
    model.train(config=TrainConfig(max_steps=400, batch_size=128, lr=2e-3), progress=False)
    return model, train


def test_end_to_end_counterfactual_and_generation(kang, trained):
    model, _train = trained
    source = kang[((kang.obs.cluster_id == HOLDOUT) & (kang.obs.group_id == "ctrl")).to_numpy()]
    real = kang[((kang.obs.cluster_id == HOLDOUT) & (kang.obs.group_id == "stim")).to_numpy()]
    before = source.X.copy()

    pred = model.predict(source, perturbation="stim", steps=12, progress=False)
    # every gene of the data: the modelled ones predicted, the others as in the source cells
    assert pred.shape == (source.n_obs, kang.n_vars)
    assert pred.var["rnadiff_modelled"].sum() == len(model.genes)
    others = list(pred.var_names[~pred.var["rnadiff_modelled"].to_numpy()])
    np.testing.assert_allclose(
        pred[:, others].X, log_expression(source, model.preprocess, genes=others), rtol=1e-6
    )
    assert pred.uns["log1p"] == {"base": None}
    assert list(pred.obs_names) == list(source.obs_names)
    assert (pred.obs["group_id"] == "stim").all()
    assert (pred.obs["rnadiff_source_group_id"] == "ctrl").all()
    assert (pred.obs["cluster_id"] == HOLDOUT).all()
    assert np.isfinite(pred.X).all() and (pred.X >= 0).all()
    assert (source.X != before).nnz == 0  # the user's cells are untouched

    gen = model.generate(
        {"group_id": "stim", "cluster_id": HOLDOUT}, n_cells=60, steps=12, progress=False
    )
    assert gen.shape == (60, kang.n_vars)
    assert gen.obs_names.is_unique and not gen.obs_names.isin(pred.obs_names).any()
    assert (gen.obs["cluster_id"] == HOLDOUT).all() and (gen.obs["group_id"] == "stim").all()

    x_src = log_expression(source, model.preprocess)
    x_real = log_expression(real, model.preprocess)
    for prediction in (pred[:, model.genes].X, gen[:, model.genes].X):
        m = response_metrics(prediction, x_real, x_src, top_n=(50,))
        # The IFN-beta response is shared across cell types: even a small model trained for
        # 400 steps must predict its direction in the held-out type.
        assert m["pearson_delta_top50"] > 0.5, m
        assert m["r2_mean_all"] > 0.3, m


def test_generated_control_resembles_real_control(kang, trained):
    model, _ = trained
    real = kang[((kang.obs.cluster_id == "B cells") & (kang.obs.group_id == "ctrl")).to_numpy()]
    other = kang[((kang.obs.cluster_id == HOLDOUT) & (kang.obs.group_id == "ctrl")).to_numpy()]
    gen = model.generate(
        {"group_id": "ctrl", "cluster_id": "B cells"}, n_cells=80, steps=12, progress=False
    )
    x_real = log_expression(real, model.preprocess).mean(0)
    x_other = log_expression(other, model.preprocess).mean(0)
    err_own = np.abs(gen[:, model.genes].X.mean(0) - x_real).mean()
    err_other = np.abs(gen[:, model.genes].X.mean(0) - x_other).mean()
    assert err_own < err_other  # the cell-type condition is followed


def test_same_seed_same_cells_different_seed_different_cells(trained):
    model, _ = trained
    cond = {"group_id": "stim", "cluster_id": "B cells"}
    a = model.generate(cond, n_cells=10, steps=6, seed=3, progress=False).X
    b = model.generate(cond, n_cells=10, steps=6, seed=3, progress=False).X
    c = model.generate(cond, n_cells=10, steps=6, seed=4, progress=False).X
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_transfer_applies_only_to_unseen_combinations(kang, trained):
    model, _ = trained
    obs = pd.DataFrame(
        {
            "group_id": ["stim", "stim", "ctrl", "stim"],
            "cluster_id": [HOLDOUT, "B cells", HOLDOUT, None],
        }
    )
    assert model.engine.transfer_plan(obs, "guide").mask.tolist() == [True, False, False, False]
    assert model.engine.transfer_plan(obs, "compose").mask.tolist() == [True, False, False, False]
    assert not model.engine.transfer_plan(obs, "none").mask.any()
    source = kang[((kang.obs.cluster_id == HOLDOUT) & (kang.obs.group_id == "ctrl")).to_numpy()]
    preds = {
        mode: model.predict(
            source[:20], perturbation="stim", steps=6, transfer=mode, progress=False
        )
        for mode in ("guide", "compose", "none")
    }
    assert preds["guide"].uns["rnadiff"]["transferred_cells"] == 20
    assert preds["none"].uns["rnadiff"]["transferred_cells"] == 0
    assert not np.allclose(preds["guide"].X, preds["none"].X)
    assert not np.allclose(preds["compose"].X, preds["none"].X)
    # seen combinations are left to the joint conditional whatever the transfer mode
    b_cells = kang[((kang.obs.cluster_id == "B cells") & (kang.obs.group_id == "ctrl")).to_numpy()]
    a = model.predict(b_cells[:10], perturbation="stim", steps=6, transfer="guide", progress=False)
    b = model.predict(b_cells[:10], perturbation="stim", steps=6, transfer="none", progress=False)
    assert np.array_equal(a.X, b.X)


def test_initial_weights_depend_on_the_seed_only(kang):
    import torch

    train = kang[:100].copy()
    RNADiffusion.setup_anndata(
        train, perturbation_key="group_id", control="ctrl", cell_type_key="cluster_id"
    )
    config = ModelConfig(
        preprocess=PreprocessConfig(n_top_genes=50),
        network=NetworkConfig(width=16, depth=1, emb_dim=8),
    )
    a = RNADiffusion(train, config=config, seed=5)
    torch.rand(1000)  # the global RNG moves on: it must not matter
    b = RNADiffusion(train, config=config, seed=5)
    c = RNADiffusion(train, config=config, seed=6)
    wa, wb, wc = (m.denoiser.state_dict() for m in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_compose_takes_the_effect_from_the_nearest_measured_cell_type(trained):
    # stimulated CD14+ monocytes were never seen: their effect comes from the measured cell
    # type whose (model) control profile is closest, the other monocytes
    model, _ = trained
    obs = pd.DataFrame({"group_id": ["stim", "stim", "ctrl"], "cluster_id": [HOLDOUT] * 3})
    mask = model.engine.transfer_plan(obs, "compose").mask
    rows = condition_rows(model.registry, obs)
    contexts, weights, relative = model.engine.transfer_contexts(mask, rows)
    names = list(model.registry["cluster_id"].tokens)
    context_names = [names[i] for i in contexts["cluster_id"].argmax(dim=1).tolist()]
    chosen = [c for c, w in zip(context_names, weights[0], strict=True) if w > 0]
    assert chosen == ["FCGR3A+ Monocytes"] and weights[0].sum() == pytest.approx(1.0)
    assert np.array_equal(weights[0], weights[1]) and not weights[2].any()
    # every cell type has controls; the held-out one has no stimulated cells to learn from
    assert sorted(context_names) == sorted(names)
    assert weights[0][context_names.index(HOLDOUT)] == 0
    # how far the source is, relative to the spacing of the measured types: known for the
    # transferred cells only
    assert relative[0] == relative[1] > 0 and np.isnan(relative[2])


def test_compose_scale_follows_the_distance_to_the_source_unless_given(
    kang, trained, caplog, tmp_path
):
    model, _ = trained
    source = kang[((kang.obs.cluster_id == HOLDOUT) & (kang.obs.group_id == "ctrl")).to_numpy()]
    kw = dict(perturbation="stim", steps=6, progress=False)
    with caplog.at_level("INFO", logger="rnadiff"):
        auto = model.predict(source[:12], **kw)
    assert f"stim never measured in {HOLDOUT}: its effect taken from FCGR3A+ Monocytes" in (
        caplog.text
    )
    info = auto.uns["rnadiff"]
    assert info["transfer_scale_by_distance"] and info["transfer_scale"] == 1.5
    (record,) = info["transfer_sources"].values()
    assert list(info["transfer_sources"]) == [f"stim in {HOLDOUT}"]
    assert record["context"] == HOLDOUT and record["source"] == "FCGR3A+ Monocytes"
    assert record["cells"] == 12
    expected = float(distance_transfer_scale(np.array([record["relative_distance"]]), 1.5)[0])
    assert record["scale"] == pytest.approx(expected) and 1.0 <= record["scale"] <= 1.5
    # the same prediction made with that scale given: identical cells
    fixed = model.predict(source[:12], transfer_scale=record["scale"], **kw)
    assert not fixed.uns["rnadiff"]["transfer_scale_by_distance"]
    # the record survives a round trip through .h5ad (what the CLI writes)
    auto.write_h5ad(tmp_path / "pred.h5ad")
    back = ad.read_h5ad(tmp_path / "pred.h5ad").uns["rnadiff"]["transfer_sources"]
    assert back[f"stim in {HOLDOUT}"]["source"] == "FCGR3A+ Monocytes"
    (given,) = fixed.uns["rnadiff"]["transfer_sources"].values()
    assert given["scale"] == pytest.approx(record["scale"])
    np.testing.assert_allclose(fixed.X, auto.X, rtol=1e-4, atol=1e-4)
    if record["scale"] < 1.5:  # a given scale is used as it is
        assert not np.allclose(model.predict(source[:12], transfer_scale=1.5, **kw).X, auto.X)


@pytest.fixture(scope="module")
def model_(trained):
    """The trained model (calibrated at the end of training, the default)."""
    return trained[0]


def test_calibration_factor_is_the_least_squares_fit_on_the_training_controls(model_):
    """Recomputed from public predictions: every training control cell (of the types where
    the stimulus was measured) predicted under the stimulus and under the control; the
    factor maps the mean predicted change onto the measured training change."""
    before = dict(model_.effect_scales)
    try:
        table = model_.calibrate_effects(n_cells=10**6)  # every control cell
    finally:
        found, model_.effect_scales = dict(model_.effect_scales), before
    assert list(table.index) == ["stim"]
    train = model_.adata
    obs = train.obs
    seen = (obs.group_id == "ctrl") & (obs.cluster_id != HOLDOUT)
    assert table.loc["stim", "n_cells"] == seen.sum()
    src = train[seen.to_numpy()]
    kw = dict(progress=False, calibrated=False, anchor=False)  # the network's own
    change = (
        model_.predict(src, perturbation="stim", **kw)[:, model_.genes].X
        - model_.predict(src, perturbation="ctrl", **kw)[:, model_.genes].X
    )
    log = pd.DataFrame(model_.log_expression(train), index=obs.index)
    means = log.groupby([obs.cluster_id, obs.group_id], observed=True).mean()
    types = src.obs.cluster_id.to_numpy()
    observed = np.mean(
        [means.loc[(t, "stim")].to_numpy() - means.loc[(t, "ctrl")].to_numpy() for t in types],
        axis=0,
    )
    predicted = change.mean(0)
    expected = np.clip(observed @ predicted / (predicted @ predicted), 0.5, 5.0)
    assert found["stim"] == pytest.approx(expected, rel=1e-3)
    assert table.loc["stim", "scale"] == found["stim"]


def test_calibrated_effects_apply_where_the_perturbation_was_measured(kang, model_):
    scale = model_.effect_scales["stim"]
    assert 0.5 <= scale <= 5.0 and scale != 1.0
    b_ctrl = kang[(kang.obs.cluster_id == "B cells").to_numpy() & (kang.obs.group_id == "ctrl")]
    kw = dict(perturbation="stim", progress=False)
    calibrated = model_.predict(b_ctrl, **kw)
    plain = model_.predict(b_ctrl, calibrated=False, **kw)
    assert calibrated.uns["rnadiff"]["effect_scales"] == {"stim": scale}
    assert plain.uns["rnadiff"]["effect_scales"] == {}
    assert not np.allclose(calibrated.X, plain.X)
    before = dict(model_.effect_scales)
    try:  # a factor of 1 is the network's own effect
        model_.effect_scales = {"stim": 1.0}
        np.testing.assert_array_equal(model_.predict(b_ctrl, **kw).X, plain.X)
    finally:
        model_.effect_scales = before
    # the held-out type's stimulated cells are transferred: their scale is the transfer's
    mono = kang[(kang.obs.cluster_id == HOLDOUT).to_numpy() & (kang.obs.group_id == "ctrl")]
    out = model_.predict(mono, **kw)
    assert out.uns["rnadiff"]["effect_scales"] == {}
    np.testing.assert_array_equal(out.X, model_.predict(mono, calibrated=False, **kw).X)
    joint = model_.predict(mono, transfer="none", **kw)  # not transferred, still unmeasured
    assert joint.uns["rnadiff"]["effect_scales"] == {}
    plain_joint = model_.predict(mono, transfer="none", calibrated=False, **kw)
    np.testing.assert_array_equal(joint.X, plain_joint.X)
    # generation with the cell type left open is calibrated too
    gen = model_.generate({"group_id": "stim"}, n_cells=5, progress=False)
    assert gen.uns["rnadiff"]["effect_scales"] == {"stim": scale}


def test_effect_scales_are_saved_and_calibration_can_be_turned_off(kang, model_, tmp_path):
    model_.save(tmp_path / "m")
    assert RNADiffusion.load(tmp_path / "m").effect_scales == model_.effect_scales
    small = kang[:200].copy()
    RNADiffusion.setup_anndata(small, perturbation_key="group_id", control="ctrl")
    fresh = RNADiffusion(small, config=ModelConfig(preprocess=PreprocessConfig(n_top_genes=50)))
    fresh.train(config=TrainConfig(max_steps=3, calibration_cells=0), progress=False)
    assert fresh.effect_scales == {}
    with pytest.raises(InputError, match="n_cells"):
        fresh.calibrate_effects(n_cells=0)
    unperturbed = kang[:200].copy()
    RNADiffusion.setup_anndata(unperturbed, cell_type_key="cluster_id")
    fresh = RNADiffusion(
        unperturbed, config=ModelConfig(preprocess=PreprocessConfig(n_top_genes=50))
    )
    fresh.train(max_steps=3, progress=False)
    assert fresh.effect_scales == {} and fresh.calibrate_effects().empty


def test_spread_factor_is_the_mean_ratio_over_the_measured_transports(model_):
    """Recomputed from public predictions: every training type's control cells predicted as
    stimulated (not widened) against its real stimulated cells; the held-out type, never
    measured stimulated, is no pair."""
    before = model_.spread_scale
    try:
        table = model_.calibrate_spread(n_cells=10**6, min_cells=2)  # every control cell
    finally:
        found, model_.spread_scale = model_.spread_scale, before
    assert found == before  # same cells as the training's calibration (all of them)
    train = model_.adata
    obs = train.obs
    types = sorted(set(obs.cluster_id) - {HOLDOUT})
    assert len(table) == len(types)
    log = model_.log_expression(train)
    ratios = []
    for t in types:
        src = ((obs.cluster_id == t) & (obs.group_id == "ctrl")).to_numpy()
        dst = ((obs.cluster_id == t) & (obs.group_id == "stim")).to_numpy()
        moved = model_.predict(
            train[src], perturbation="stim", spread=False, anchor=False, progress=False
        )
        moved = moved[:, model_.genes].X
        ratios.append(spread_ratio(moved, log[dst]))
        (row,) = table.index[table.target.str.contains(f"cluster_id={t}", regex=False)]
        assert table.loc[row, "n_source"] == src.sum() and table.loc[row, "n_target"] == dst.sum()
        assert table.loc[row, "ratio"] == pytest.approx(ratios[-1], rel=1e-5)
    assert found == pytest.approx(np.clip(np.mean(ratios), 0.5, 2.0), rel=1e-5)
    assert found > 1  # the transport narrows the population


def test_counterfactual_cells_are_widened_around_their_mean(kang, model_):
    r = model_.spread_scale
    assert r != 1.0
    cells = kang[(kang.obs.group_id == "ctrl").to_numpy()]  # every type, widened per type
    kw = dict(perturbation="stim", progress=False)
    wide = model_.predict(cells, **kw)[:, model_.genes]  # unmodelled genes are not widened
    plain = model_.predict(cells, spread=False, **kw)[:, model_.genes]
    assert wide.uns["rnadiff"]["spread_scale"] == r and plain.uns["rnadiff"]["spread_scale"] == 1
    assert (wide.X >= 0).all()
    for t in sorted(set(cells.obs.cluster_id)):
        rows = (cells.obs.cluster_id == t).to_numpy()
        np.testing.assert_allclose(wide.X[rows].mean(0), plain.X[rows].mean(0), atol=1e-5)
        np.testing.assert_allclose(
            wide.X[rows], widen(plain.X[rows], np.zeros(rows.sum()), r), rtol=1e-6
        )
        assert wide.X[rows].var(0).sum() > plain.X[rows].var(0).sum()
    # generation samples from noise and is never widened
    gen = model_.generate({"group_id": "stim"}, n_cells=5, progress=False)
    assert "spread_scale" not in gen.uns["rnadiff"]
    before = model_.spread_scale
    try:  # a factor of 1 is the cells as decoded
        model_.spread_scale = 1.0
        np.testing.assert_array_equal(model_.predict(cells, **kw)[:, model_.genes].X, plain.X)
    finally:
        model_.spread_scale = before


def test_spread_scale_is_saved_and_spread_calibration_can_be_turned_off(kang, model_, tmp_path):
    model_.save(tmp_path / "m")
    assert RNADiffusion.load(tmp_path / "m").spread_scale == model_.spread_scale
    small = kang[:200].copy()
    RNADiffusion.setup_anndata(small, perturbation_key="group_id", control="ctrl")
    config = ModelConfig(preprocess=PreprocessConfig(n_top_genes=50))
    fresh = RNADiffusion(small, config=config)
    fresh.train(config=TrainConfig(max_steps=3, spread_cells=0), progress=False)
    assert fresh.spread_scale == 1.0
    for bad in (dict(n_cells=0), dict(max_pairs=0), dict(min_cells=1)):
        with pytest.raises(InputError, match=next(iter(bad))):
            fresh.calibrate_spread(**bad)
    with pytest.raises(InputError, match="spread_cells"):
        TrainConfig(spread_cells=-1)
    unperturbed = kang[:200].copy()  # no perturbation and nothing continuous: no pair
    RNADiffusion.setup_anndata(unperturbed, cell_type_key="cluster_id")
    fresh = RNADiffusion(unperturbed, config=config)
    fresh.train(max_steps=3, progress=False)
    assert fresh.spread_scale == 1.0 and fresh.calibrate_spread().empty


def test_calibration_decodes_at_the_perturbations_own_dose(kang):
    """Control cells have dose 0; the stimulated ones dose 1. The calibration must predict
    the stimulus at dose 1 (what was measured), not at the control cells' dose 0."""
    train = kang[kang.obs.cluster_id.isin(["B cells", "CD4 T cells"]).to_numpy()].copy()
    train.obs["dose"] = np.where(train.obs.group_id == "stim", 1.0, 0.0)
    RNADiffusion.setup_anndata(
        train, perturbation_key="group_id", control="ctrl", cell_type_key="cluster_id",
        dose_key="dose",
    )  # fmt: skip
    config = ModelConfig(
        preprocess=PreprocessConfig(n_top_genes=100),
        network=NetworkConfig(width=64, depth=1, emb_dim=16),
    )
    model = RNADiffusion(train, config=config)
    model.train(config=TrainConfig(max_steps=150, calibration_cells=0), progress=False)
    table = model.calibrate_effects(n_cells=10**6)
    ctrl = train[(train.obs.group_id == "ctrl").to_numpy()]
    log = pd.DataFrame(model.log_expression(train), index=train.obs.index)
    means = log.groupby([train.obs.cluster_id, train.obs.group_id], observed=True).mean()
    observed = np.mean(
        [means.loc[(t, "stim")] - means.loc[(t, "ctrl")] for t in ctrl.obs.cluster_id], axis=0
    )
    kw = dict(progress=False, calibrated=False, anchor=False)  # the network's own
    recon = model.predict(ctrl, perturbation="ctrl", **kw)
    recon = recon[:, model.genes].X

    def change(dose):
        target = {"group_id": "stim", "dose": dose}
        pred = model.predict(ctrl, target=target, **kw)
        return (pred[:, model.genes].X - recon).mean(0)

    p = change(1.0)
    assert table.loc["stim", "scale"] == pytest.approx(
        np.clip(observed @ p / (p @ p), 0.5, 5.0), rel=1e-3
    )
    # the dose matters to the answer: dose 0 is the control (Hill response 0), no change
    assert np.linalg.norm(change(0.0)) < 0.1 * np.linalg.norm(p)


def test_counterfactuals_of_the_same_cells_encode_them_once(kang, trained, monkeypatch):
    import torch

    import rnadiff.sampling._engine as model_module

    model, _train = trained
    source = kang[((kang.obs.cluster_id == "B cells") & (kang.obs.group_id == "ctrl")).to_numpy()]
    calls = []
    real_encode = model_module.encode
    monkeypatch.setattr(
        model_module, "encode", lambda *a, **k: calls.append(1) or real_encode(*a, **k)
    )
    kw = dict(steps=8, progress=False)
    model.engine._last_encoding = None
    first = model.predict(source, perturbation="stim", **kw).X
    n_first = len(calls)
    assert n_first > 0
    again = model.predict(source, perturbation="stim", **kw).X
    other = model.predict(source, target={"cluster_id": "CD4 T cells"}, **kw).X
    assert len(calls) == n_first  # the same cells under the same condition: encoded once
    np.testing.assert_array_equal(again, first)
    assert not np.allclose(other, first)
    model.engine._last_encoding = None  # without the kept encoding: the same numbers
    np.testing.assert_array_equal(model.predict(source, perturbation="stim", **kw).X, first)
    assert len(calls) == 2 * n_first
    # other cells, or changed weights, are encoded anew
    model.predict(source[:10], perturbation="stim", **kw)
    assert len(calls) == 3 * n_first
    weight = next(model.ema.parameters())
    saved = weight.detach().clone()
    with torch.no_grad():
        weight += 0.05
    try:
        changed = model.predict(source, perturbation="stim", **kw).X
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    assert len(calls) == 4 * n_first
    assert not np.allclose(changed, first)
    # an encoding larger than the limit is not kept
    monkeypatch.setattr(model_module, "KEEP_ENCODING_MAX", 10)
    model.engine._last_encoding = None
    model.predict(source, perturbation="stim", **kw)
    model.predict(source, perturbation="stim", **kw)
    assert len(calls) == 6 * n_first and model.engine._last_encoding is None


def test_an_effect_measured_in_one_context_only_is_transferred_at_the_far_scale(
    kang_small, tiny_model_config, caplog
):
    # stim measured in B cells only: no spacing of measured contexts to compare a distance
    # with, so the far scale is used, and the log says why instead of "relative distance nan"
    obs = kang_small.obs
    keep = ((obs.group_id == "ctrl") | (obs.cluster_id == "B cells")).to_numpy()
    train = kang_small[keep].copy()
    RNADiffusion.setup_anndata(train, perturbation_key="group_id", control="ctrl",
                               cell_type_key="cluster_id")  # fmt: skip
    model = RNADiffusion(train, config=tiny_model_config)
    model.train(config=TrainConfig(max_steps=3, calibration_cells=0, spread_cells=0),
                progress=False)  # fmt: skip
    source = kang_small[((obs.cluster_id == HOLDOUT) & (obs.group_id == "ctrl")).to_numpy()]
    with caplog.at_level("INFO", logger="rnadiff"):
        out = model.predict(source[:5], perturbation="stim", steps=4, progress=False)
    (record,) = out.uns["rnadiff"]["transfer_sources"].values()
    assert record["source"] == "B cells" and np.isnan(record["relative_distance"])
    assert record["scale"] == 1.5
    assert (
        f"stim never measured in {HOLDOUT}: its effect taken from B cells (measured in one "
        "context only: no spacing to compare with), scale 1.50"
    ) in caplog.text
    assert "nan" not in caplog.text


def test_a_pair_measured_in_another_type_keeps_its_parts_here_and_takes_its_interaction(
    tiny_model_config, caplog
):
    from rnadiff.datasets import simulate

    adata, _ = simulate(
        900, seed=0, n_genes=60, n_cell_types=2, n_genetic=2, n_drugs=0, n_combinations=1,
        times=(24.0,), doses=(1.0,), interaction=1.0,
    )  # fmt: skip
    obs = adata.obs
    (pair,) = sorted({p for p in obs.perturbation.astype(str) if "+" in p})
    here, there = sorted(set(obs.cell_type.astype(str)))
    train = adata[~((obs.perturbation == pair) & (obs.cell_type == here)).to_numpy()].copy()
    RNADiffusion.setup_anndata(train, perturbation_key="perturbation", control="control",
                               cell_type_key="cell_type")  # fmt: skip
    model = RNADiffusion(train, config=tiny_model_config, seed=0)
    model.train(config=TrainConfig(max_steps=200, calibration_cells=0, spread_cells=0),
                progress=False)  # fmt: skip
    source = adata[((obs.perturbation == "control") & (obs.cell_type == here)).to_numpy()][:6]
    kw = dict(perturbation=pair, steps=4, seed=0, progress=False)
    with caplog.at_level("INFO", logger="rnadiff"):
        out = model.predict(source, **kw)
    (record,) = out.uns["rnadiff"]["transfer_sources"].values()
    assert record["transferred"] == "interaction" and record["source"] == there
    assert record["scale"] == 1.0 and record["cells"] == 6
    assert f"{pair} never measured in {here}: its parts as measured there" in caplog.text
    # the joint conditional of the pair in this type (no transfer) is another prediction
    joint = model.predict(source, transfer="none", **kw)
    assert not np.allclose(out.X, joint.X, atol=1e-3)
    # a cell of the type where the pair was measured uses the joint conditional
    own = adata[((obs.perturbation == "control") & (obs.cell_type == there)).to_numpy()][:3]
    assert model.predict(own, **kw).uns["rnadiff"]["transfer_sources"] == {}
