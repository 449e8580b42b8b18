"""Mean anchoring on a trained model: measured, composed and saved residuals."""

import numpy as np
import pytest

from rnadiff import ModelConfig, NetworkConfig, RNADiffusion, TrainConfig
from rnadiff.conditioning._anchors import anchor_cells
from rnadiff.datasets import simulate

SMALL = ModelConfig(network=NetworkConfig(width=32, depth=1, emb_dim=16))


@pytest.fixture(scope="module")
def screen():
    adata, _ = simulate(
        1500, seed=5, n_genes=40, n_programs=6, n_genetic=2, n_drugs=1, n_combinations=1,
        n_cell_types=2, times=(24.0,), doses=(10.0,),
    )  # fmt: skip
    return adata


@pytest.fixture(scope="module")
def model(screen):
    pair = screen.obs["perturbation"].astype(str).str.contains("+", regex=False).to_numpy()
    adata = screen[~pair].copy()
    RNADiffusion.setup_anndata(
        adata, perturbation_key="perturbation", control="control", dose_key="dose",
        cell_type_key="cell_type",
    )  # fmt: skip
    model = RNADiffusion(adata, config=SMALL, seed=0)
    model.train(max_steps=40, progress=False)  # under-trained: large residuals
    return model


def controls(screen, ct="celltype_0"):
    obs = screen.obs
    keep = (obs["perturbation"] == "control").to_numpy() & (obs["cell_type"] == ct).to_numpy()
    return screen[keep].copy()


def mean_change(model, screen, source, pert):
    obs = model.adata.obs
    ct = source.obs["cell_type"].iloc[0]
    here = (obs["cell_type"] == ct).to_numpy()
    real = model.log_expression(model.adata[here & (obs["perturbation"] == pert).to_numpy()])
    ctrl = model.log_expression(model.adata[here & (obs["perturbation"] == "control").to_numpy()])
    return real.mean(0) - ctrl.mean(0)


def test_training_anchors_every_measured_condition(model):
    labels = model.adata.obs[["perturbation", "cell_type"]].astype(str).drop_duplicates()
    assert model.anchors is not None and len(model.anchors) == len(labels)
    table = model.calibrate_means(n_cells=32)
    assert list(table.columns) == ["condition", "n_cells", "n_predicted", "residual", "noise"]
    assert (table.n_predicted == 32).all() and (table.noise > 0).all()
    assert (table.residual > table.noise).any()  # 40 steps miss the means beyond their noise


def test_a_measured_condition_keeps_its_training_mean(model, screen):
    source = controls(screen)
    pert = "G0000" if "G0000" in set(model.adata.obs["perturbation"]) else None
    pert = pert or sorted(set(model.adata.obs["perturbation"].astype(str)) - {"control"})[0]
    dose = model.adata.obs.loc[model.adata.obs["perturbation"] == pert, "dose"].iloc[0]
    target = {"perturbation": pert, "dose": dose}
    kw = dict(target=target, steps=8, progress=False, spread=False)
    on, off = model.predict(source, **kw), model.predict(source, anchor=False, **kw)
    assert on.uns["rnadiff"]["anchored_cells"] == source.n_obs
    assert off.uns["rnadiff"]["anchored_cells"] == 0
    truth = mean_change(model, screen, source, pert)
    base = model.log_expression(source).mean(0)
    err_on = np.abs(model.log_expression(on).mean(0) - base - truth).mean()
    err_off = np.abs(model.log_expression(off).mean(0) - base - truth).mean()
    assert err_on < 0.7 * err_off


def test_a_pair_measured_nowhere_takes_its_parts_residuals(model, screen):
    combo = str(next(p for p in screen.obs["perturbation"].astype(str) if "+" in p))
    source = controls(screen, "celltype_1")
    dose = float(screen.obs.loc[screen.obs["perturbation"] == combo, "dose"].iloc[0])
    kw = dict(target={"perturbation": combo, "dose": dose}, steps=8, progress=False, spread=False)
    on, off = model.predict(source, **kw), model.predict(source, anchor=False, **kw)
    parts = sorted(combo.split("+"))
    reg = model.registry
    ip = [c.key for c in reg.covariates if c.categorical].index("perturbation")
    row = ["celltype_1"]
    row.insert(ip, None)
    values = np.array([dose if k == "dose" else np.nan for k in model.anchors.keys])
    combos = {}
    for p in [*parts, "control"]:
        row[ip] = p
        combos[p] = model.anchors.combination(tuple(row), values)
    k = len(parts) - 1

    def composed(array):
        total = sum(model.anchors._apply(combos[p], array) for p in parts)
        return total - k * model.anchors._apply(combos["control"], array)

    expected, reference = composed(model.anchors.residuals), composed(model.anchors.means)
    assert np.abs(expected).max() > 0
    genes = model.genes
    n = source.n_obs
    want = anchor_cells(
        off[:, genes].X, np.tile(expected, (n, 1)), np.tile(reference, (n, 1)), np.ones(n, bool)
    )
    np.testing.assert_allclose(on[:, genes].X, want, rtol=1e-5, atol=1e-5)


def test_only_counterfactuals_of_control_cells_are_anchored(model, screen):
    # (predict's method="generate" makes new cells and moves them as generate() does: below)
    obs = screen.obs
    pert = sorted(set(model.adata.obs["perturbation"].astype(str)) - {"control"})[0]
    treated = screen[(obs["perturbation"] == pert).to_numpy()][:20].copy()
    back = model.predict(treated, perturbation="control", steps=4, progress=False)
    assert back.uns["rnadiff"]["anchored_cells"] == 0


def test_anchors_are_saved_and_can_be_turned_off(model, screen, tmp_path):
    model.save(tmp_path / "m")
    loaded = RNADiffusion.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.anchors.residuals, model.anchors.residuals)
    assert loaded.anchors.rows == model.anchors.rows
    source = controls(screen)[:15]
    pert = sorted(set(model.adata.obs["perturbation"].astype(str)) - {"control"})[0]
    a = model.predict(source, perturbation=pert, steps=4, progress=False)
    b = loaded.predict(source, perturbation=pert, steps=4, progress=False)
    np.testing.assert_array_equal(a.X, b.X)
    loaded = RNADiffusion.load(tmp_path / "m", adata=model.adata)
    loaded.train(config=TrainConfig(max_steps=45, anchor_cells=0), progress=False)
    assert loaded.anchors is None  # more training without anchoring drops the old anchors


def test_anchors_decode_every_condition_as_predict_does(model, screen):
    from rnadiff.model._calibration import counterfactuals

    cells = controls(screen)[:12]
    perts = sorted(set(model.adata.obs["perturbation"].astype(str)))[:3]
    targets = [{"perturbation": p, "dose": 10.0} for p in perts]
    together = counterfactuals(model, cells, targets, steps=6, seed=3, batch_size=7)
    for t, got in zip(targets, together, strict=True):
        alone = model.predict(cells, target=t, steps=6, seed=3, spread=False, anchor=False,
                              progress=False)  # fmt: skip
        np.testing.assert_allclose(got, alone[:, model.genes].X, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ a time course
@pytest.fixture(scope="module")
def course():
    """One drug's cells at 6, 24 and 72 h in two cell types, without a perturbation column."""
    adata, _ = simulate(
        1200, seed=3, n_genes=40, n_programs=6, n_genetic=0, n_drugs=1, n_combinations=0,
        n_cell_types=2, times=(6.0, 24.0, 72.0), doses=(10.0,), control_weight=0.01,
    )  # fmt: skip
    adata = adata[(adata.obs["perturbation"] != "control").to_numpy()].copy()
    adata.obs = adata.obs[["cell_type", "time"]].copy()
    RNADiffusion.setup_anndata(adata, time_key="time", categorical_keys=["cell_type"])
    model = RNADiffusion(adata, config=SMALL, seed=0)
    model.train(max_steps=40, progress=False)
    return adata, model


def test_a_time_course_anchors_transports_between_its_measured_times(course, tmp_path):
    adata, model = course
    # each type: 3 times x 3 (every measured time from every measured time)
    assert len(model.anchors) == 18 and np.isfinite(model.anchors.sources).all()
    obs = adata.obs
    here = (obs["cell_type"] == "celltype_0").to_numpy()
    source = adata[here & (obs["time"] == 6.0).to_numpy()]
    kw = dict(target={"time": 72.0}, steps=8, progress=False, spread=False)
    on, off = model.predict(source, **kw), model.predict(source, anchor=False, **kw)
    assert on.uns["rnadiff"]["anchored_cells"] == source.n_obs
    real = model.log_expression(adata[here & (obs["time"] == 72.0).to_numpy()]).mean(0)
    err_on = np.abs(model.log_expression(on).mean(0) - real).mean()
    err_off = np.abs(model.log_expression(off).mean(0) - real).mean()
    assert err_on < 0.7 * err_off  # the measured 6 h -> 72 h change
    # between two measured times: the interpolated residuals of 6 -> 6 and 6 -> 24 h
    between = model.predict(source, **(kw | {"target": {"time": 15.0}}))
    assert between.uns["rnadiff"]["anchored_cells"] == source.n_obs
    # cells of a time never measured, or moved to another type, take none
    moved = model.predict(source, **(kw | {"target": {"time": 72.0, "cell_type": "celltype_1"}}))
    assert moved.uns["rnadiff"]["anchored_cells"] == 0
    unmeasured = source.copy()
    unmeasured.obs["time"] = 15.0
    assert model.predict(unmeasured, **kw).uns["rnadiff"]["anchored_cells"] == 0
    model.save(tmp_path / "m")
    again = RNADiffusion.load(tmp_path / "m")
    np.testing.assert_array_equal(again.anchors.sources, model.anchors.sources)
    np.testing.assert_array_equal(again.predict(source, **kw).X, on.X)


def test_shift_to_reaches_each_genes_target_mean_after_zeros():
    from rnadiff.model._generation import shift_to

    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 0.5, size=(300, 5))
    target = np.array([0.0, 0.05, 0.8, 1.0, 3.0])
    s = shift_to(x, target)
    np.testing.assert_allclose(np.maximum(x + s, 0).mean(0), target, atol=1e-6)
    assert s[4] == pytest.approx(3.0 - x[:, 4].mean(), abs=1e-6)  # nothing clipped: a shift


def test_generation_keeps_a_measured_conditions_training_mean(model):
    obs, genes = model.adata.obs, list(model.genes)
    knock_out = next(p for p in obs["perturbation"].astype(str).unique() if p.startswith("G"))
    condition = {"perturbation": knock_out, "cell_type": "celltype_0"}
    out = model.generate(condition, n_cells=200, seed=0, progress=False)
    assert out.uns["rnadiff"]["anchored_cells"] == 200
    here = (obs["perturbation"] == knock_out).to_numpy() & (obs["cell_type"] == "celltype_0")
    real = model.log_expression(model.adata[here.to_numpy()])
    np.testing.assert_allclose(out[:, genes].X.mean(0), real.mean(0), atol=1e-4)
    assert (out.X == 0).mean() > 0  # shifted below 0: exact zeros
    own = model.generate(condition, n_cells=200, seed=0, progress=False, anchor=False)
    assert own.uns["rnadiff"]["anchored_cells"] == 0
    assert np.abs(own[:, genes].X.mean(0) - real.mean(0)).max() > 0.05  # 40 steps miss it
    # a covariate left unset: the measured conditions that match, by their cells
    either = model.generate({"perturbation": knock_out}, n_cells=300, seed=0, progress=False)
    pooled = model.log_expression(model.adata[(obs["perturbation"] == knock_out).to_numpy()])
    np.testing.assert_allclose(either[:, genes].X.mean(0), pooled.mean(0), atol=1e-4)


def test_generation_of_a_pair_measured_nowhere_starts_from_the_controls_mean(model, screen):
    import dataclasses

    pair = next(p for p in screen.obs["perturbation"].astype(str).unique() if "+" in p)
    condition = {"perturbation": pair, "cell_type": "celltype_0", "dose": 10.0}
    kw = dict(n_cells=150, seed=1, progress=False)
    out = model.generate(condition, **kw)
    own = model.generate(condition, anchor=False, **kw)
    assert out.uns["rnadiff"]["anchored_cells"] == 150 and np.abs(out.X - own.X).max() > 0.05
    # the shift is the one that puts the same noise, decoded under the control, at the
    # control's training mean: generating the control itself shows it
    ctrl = model.generate({"perturbation": "control", "cell_type": "celltype_0"}, **kw)
    obs, genes = model.adata.obs, list(model.genes)
    here = ((obs["perturbation"] == "control") & (obs["cell_type"] == "celltype_0")).to_numpy()
    real = model.log_expression(model.adata[here])
    np.testing.assert_allclose(ctrl[:, genes].X.mean(0), real.mean(0), atol=1e-4)
    # checkpoints from before the training means were kept: the network's own cells
    anchors = model.anchors
    model.anchors = dataclasses.replace(anchors, levels=None)
    try:
        old = model.generate(condition, **kw)
    finally:
        model.anchors = anchors
    assert old.uns["rnadiff"]["anchored_cells"] == 0
    np.testing.assert_array_equal(old.X, own.X)


def test_training_means_are_saved_with_the_anchors(model, tmp_path):
    model.save(tmp_path / "m")
    loaded = RNADiffusion.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.anchors.levels, model.anchors.levels)
    condition = {"perturbation": "control", "cell_type": "celltype_1"}
    a = model.generate(condition, n_cells=20, seed=0, progress=False)
    b = loaded.generate(condition, n_cells=20, seed=0, progress=False)
    np.testing.assert_array_equal(a.X, b.X)


def test_predict_by_generation_moves_cells_as_generate_does(model, screen):
    # predict(method="generate") (what predict_fate asks for) generates from noise: its cells
    # take the training mean of a measured target condition, as generate's do
    obs, genes = model.adata.obs, list(model.genes)
    knock_out = next(p for p in obs["perturbation"].astype(str).unique() if p.startswith("G"))
    source = controls(screen)
    kw = dict(perturbation=knock_out, method="generate", seed=0, progress=False)
    out = model.predict(source, **kw)
    assert out.uns["rnadiff"]["anchored_cells"] == source.n_obs
    here = (obs["perturbation"] == knock_out).to_numpy() & (obs["cell_type"] == "celltype_0")
    real = model.log_expression(model.adata[here.to_numpy()])
    np.testing.assert_allclose(out[:, genes].X.mean(0), real.mean(0), atol=1e-4)
    own = model.predict(source, anchor=False, **kw)
    assert np.abs(own[:, genes].X.mean(0) - real.mean(0)).max() > 0.05
    # a pair measured nowhere: decoded under the control too, from the same noise
    pair = next(p for p in screen.obs["perturbation"].astype(str).unique() if "+" in p)
    moved = model.predict(source, **(kw | {"perturbation": pair}))
    plain = model.predict(source, anchor=False, **(kw | {"perturbation": pair}))
    assert moved.uns["rnadiff"]["anchored_cells"] == source.n_obs
    assert np.abs(moved.X - plain.X).max() > 0.05


def test_compose_places_contexts_by_their_training_control_means(model):
    import dataclasses

    from rnadiff.sampling._transfer_plan import measured_profiles

    engine = dataclasses.replace(model.engine, context_profiles="data")
    cats = [c.key for c in model.registry.covariates if c.categorical]
    ip = cats.index("perturbation")
    contexts = [("celltype_0",), ("celltype_1",)]
    got = measured_profiles(engine, contexts, ip, "control")
    obs = model.adata.obs
    for ct, profile in zip(("celltype_0", "celltype_1"), got, strict=True):
        keep = (obs["perturbation"] == "control").to_numpy() & (obs["cell_type"] == ct).to_numpy()
        mean = model.log_expression(model.adata[keep]).mean(0)
        np.testing.assert_allclose(profile, engine.to_model(mean), rtol=1e-4, atol=1e-4)
    # a context without measured controls, the network rule or no anchors: the network's own
    assert measured_profiles(engine, [("celltype_9",)], ip, "control") is None
    assert measured_profiles(model.engine, contexts, ip, "control") is None  # the default
    assert (
        measured_profiles(dataclasses.replace(engine, anchors=None), contexts, ip, "control")
        is None
    )
