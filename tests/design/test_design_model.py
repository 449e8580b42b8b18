"""design() and rank_perturbations() on a small model of the real Kang 2018 data."""

import numpy as np
import pytest

from rnadiff import ModelConfig, NetworkConfig, PreprocessConfig, RNADiffusion, TrainConfig
from rnadiff._errors import InputError
from rnadiff.design import CellState, Markers

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def kang(kang_per_group):
    return kang_per_group(60)


@pytest.fixture(scope="module")
def model(kang):
    train = kang.copy()
    RNADiffusion.setup_anndata(
        train, perturbation_key="group_id", control="ctrl", cell_type_key="cluster_id"
    )
    config = ModelConfig(
        preprocess=PreprocessConfig(n_top_genes=200),
        network=NetworkConfig(width=128, depth=2, emb_dim=32),
    )
    m = RNADiffusion(train, config=config, seed=0)
    m.train(config=TrainConfig(max_steps=400, batch_size=128, lr=2e-3, seed=0), progress=False)
    return m


def isg(model):
    genes = [g for g in ("ISG15", "IFIT1", "IFI6", "IFIT3", "MX1", "ISG20") if g in model.genes]
    assert len(genes) >= 2
    return genes[:3]


def test_design_meets_markers_that_unguided_cells_miss(model, kang):
    ctrl = kang[(kang.obs.group_id == "ctrl").to_numpy()]
    before = kang.copy()
    spec = Markers(up=tuple(isg(model)))
    out = model.design(
        spec, conditions={"cluster_id": "B cells"}, n_cells=60, reference=ctrl, progress=False
    )
    info = out.uns["rnadiff"]["design"]
    assert out.n_obs == 60 and list(out.var_names) == list(kang.var_names)
    assert set(out.obs["cluster_id"]) == {"B cells"}
    for col in ("objective", "distance_to_spec", "meets_spec", "realism"):
        assert col in out.obs
    assert info["success_rate"] >= 0.9
    assert info["success_rate"] > info["unguided_success_rate"] + 0.3
    assert out.obs["meets_spec"].mean() == info["success_rate"]
    assert np.isfinite(out.obs["realism"]).all() and info["realism_median"] < 2
    # the reference given by the user is left as it was
    assert np.array_equal(kang.X.toarray(), before.X.toarray())


def test_scale_zero_is_plain_generation_and_seeds_reproduce(model):
    spec = Markers(up=tuple(isg(model)))
    cond = {"cluster_id": "CD4 T cells", "group_id": "ctrl"}
    # the network's own generation: design's cells are not moved to the measured means (its
    # guidance moves them away from them on purpose)
    plain = model.generate(cond, n_cells=20, seed=3, progress=False, anchor=False)
    unguided = model.design(spec, conditions=cond, n_cells=20, scale=0, seed=3, progress=False)
    assert np.allclose(unguided.X, plain.X, atol=1e-6)
    a = model.design(spec, conditions=cond, n_cells=20, seed=4, langevin_steps=1, progress=False)
    b = model.design(spec, conditions=cond, n_cells=20, seed=4, langevin_steps=1, progress=False)
    assert np.array_equal(a.X, b.X)


def test_design_combines_markers_with_a_cell_state(model, kang):
    state = CellState(kang, label_key="group_id", state="stim")
    spec = Markers(up=tuple(isg(model)[:1])) + state
    out = model.design(spec, n_cells=40, through_denoiser=True, progress=False)
    assert {"meets_term0", "meets_term1"} <= set(out.obs.columns)
    assert out.obs["meets_spec"].equals(out.obs["meets_term0"] & out.obs["meets_term1"])
    assert out.uns["rnadiff"]["design"]["success_rate"] > 0.5


def test_design_errors_are_specific(model):
    with pytest.raises(InputError, match="not among the model's"):
        model.design(Markers(up=("NOT_A_GENE",)), n_cells=5, progress=False)
    with pytest.raises(InputError, match="empty"):
        model.design([], n_cells=5, progress=False)
    with pytest.raises(InputError, match="unknown covariates"):
        model.design(Markers(up=tuple(isg(model))), conditions={"donor": "1"}, progress=False)
    with pytest.raises(InputError, match="scale"):
        model.design(Markers(up=tuple(isg(model))), scale=-1, progress=False)


def test_likelihood_ranks_the_true_condition_first(model, kang):
    stim = kang[((kang.obs.group_id == "stim") & (kang.obs.cluster_id == "B cells")).to_numpy()]
    ranked = model.rank_perturbations(stim, n_cells=30, n_noise_levels=8, progress=False)
    assert set(ranked["perturbation"]) == {"ctrl", "stim"}
    assert ranked["rank"].tolist() == [1, 2]
    by = ranked.set_index("perturbation")
    assert by.loc["stim", "likelihood_score"] > 0 == by.loc["ctrl", "likelihood_score"]
    assert by.loc["stim", "rank"] == 1 and by.loc["stim", "vote_share"] > 0.5
    ctrl = kang[((kang.obs.group_id == "ctrl") & (kang.obs.cluster_id == "B cells")).to_numpy()]
    assert model.rank_perturbations(ctrl, n_cells=30, progress=False).iloc[0]["perturbation"] == (
        "ctrl"
    )


def test_marker_targets_rank_the_stimulus_for_interferon_genes(model):
    ranked = model.rank_perturbations(
        Markers(up=tuple(isg(model))),
        context={"cluster_id": "CD14+ Monocytes"},
        n_cells=40,
        progress=False,
    )
    assert ranked.iloc[0]["perturbation"] == "stim"
    assert "success_rate" in ranked and ranked.attrs["rnadiff_rank"]["context"]


def test_rank_errors_are_specific(model, kang):
    with pytest.raises(InputError, match="unknown perturbation 'aspirin'"):
        model.rank_perturbations(kang, candidates=["aspirin"], progress=False)
    with pytest.raises(InputError, match="must not set the perturbation"):
        model.rank_perturbations(kang, context={"group_id": "stim"}, progress=False)
    with pytest.raises(InputError, match="not a covariate"):
        model.rank_perturbations(kang, context={"donor": "1"}, progress=False)
    with pytest.raises(InputError, match="genes do not match"):
        model.rank_perturbations(kang[:, :50], n_cells=5, progress=False)


def test_pairs_add_every_combination(model, kang):
    from rnadiff.design._workflow import candidate_names

    assert candidate_names(model.engine, ["ctrl", "stim"], pairs=True) == ["ctrl", "stim"]
    assert candidate_names(model.engine, None, pairs=False) == ["ctrl", "stim"]


def test_generation_score_decodes_every_candidate_from_the_encoded_reference(model, kang):
    # the target is the model's own counterfactual of the reference cells: decoding the same
    # encoded reference under "stim" reproduces its change exactly (no sampling noise)
    b_cells = (kang.obs.cluster_id == "B cells").to_numpy()
    ctrl = kang[b_cells & (kang.obs.group_id == "ctrl").to_numpy()]
    kw = dict(reference=ctrl, n_cells=ctrl.n_obs, n_noise_levels=4, n_draws=1, progress=False)
    target = model.predict(ctrl, perturbation="stim", seed=0, anchor=False, progress=False)
    ranked = model.rank_perturbations(target, anchor=False, **kw).set_index("perturbation")
    assert ranked.loc["stim", "phenotype_score"] > 0.99
    assert ranked.loc["stim", "rank"] == 1


def test_generation_score_is_of_the_anchored_cells_that_predict_gives(model, kang):
    # anchored (the default), the candidates' cells are corrected as predict corrects its
    # counterfactuals: predict's anchored change is then reproduced, the network's is not
    b_cells = (kang.obs.cluster_id == "B cells").to_numpy()
    ctrl = kang[b_cells & (kang.obs.group_id == "ctrl").to_numpy()]
    kw = dict(reference=ctrl, n_cells=ctrl.n_obs, n_noise_levels=4, n_draws=1, progress=False)
    target = model.predict(ctrl, perturbation="stim", seed=0, progress=False)
    assert target.uns["rnadiff"]["anchored_cells"] == ctrl.n_obs
    own = model.predict(ctrl, perturbation="stim", seed=0, anchor=False, progress=False)
    genes = list(model.genes)
    gap = target[:, genes].X.mean(0) - own[:, genes].X.mean(0)
    assert np.abs(gap).max() > 0.05  # the anchors move this model's means
    anchored = model.rank_perturbations(target, **kw).set_index("perturbation")
    network = model.rank_perturbations(target, anchor=False, **kw).set_index("perturbation")
    score = "phenotype_score"
    miss_anchored, miss_network = 1 - anchored.loc["stim", score], 1 - network.loc["stim", score]
    assert miss_anchored < 1e-3 and miss_network > 20 * miss_anchored  # 3e-5 vs 1e-2 here
    # the likelihood score is the network's either way
    np.testing.assert_array_equal(anchored["likelihood_score"], network["likelihood_score"])


def test_likelihood_transfers_the_effect_where_a_perturbation_was_never_measured(model, kang):
    # as if stimulated B cells had never been measured: the likelihood of "stim" must then use
    # the effect transferred from the nearest measured cell type, as generation does
    b_cells = (kang.obs.cluster_id == "B cells").to_numpy()
    stim = kang[b_cells & (kang.obs.group_id == "stim").to_numpy()]
    kw = dict(n_cells=10, n_noise_levels=4, n_draws=1, steps=8, progress=False)
    measured = model.rank_perturbations(stim, **kw).set_index("perturbation")
    seen = model.seen
    assert ("stim", "B cells") in seen
    model.seen = seen - {("stim", "B cells")}
    try:
        transferred = model.rank_perturbations(stim, **kw).set_index("perturbation")
    finally:
        model.seen = seen
    err = "denoising_error"
    assert transferred.loc["ctrl", err] == measured.loc["ctrl", err]  # measured: unchanged
    assert transferred.loc["stim", err] != measured.loc["stim", err]
    assert transferred.loc["stim", "likelihood_score"] > 0  # still more likely than control
