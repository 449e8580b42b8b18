"""The expression prior of unseen perturbations: gene vectors, weights, soft encodings, model."""

import numpy as np
import pandas as pd
import pytest

from rnadiff._errors import InputError
from rnadiff.conditioning._prior import blend_prior, expression_prior, fit_trust, gene_vectors
from rnadiff.data._covariates import CovariateRegistry
from rnadiff.model import _calibration


def correlated_genes(n=500, seed=0):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(2, n))
    x = np.stack([a, a + 0.1 * rng.normal(size=n), -a, b, b + 0.5 * rng.normal(size=n)], axis=1)
    return (x - x.mean(0)) / x.std(0)


def test_gene_vector_cosines_are_correlations():
    x = correlated_genes()
    v = gene_vectors(x, n_components=5)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    assert np.allclose(v @ v.T, np.corrcoef(x.T), atol=1e-5)


def test_prior_weights_favor_the_most_co_expressed_seen_genes():
    genes = ["A", "A2", "NEG", "B", "B2"]
    v = gene_vectors(correlated_genes(), n_components=5)
    w = expression_prior("A", {"A2": "A2", "B": "B", "NEG": "NEG"}, genes, v, k=2)
    assert list(w) == ["A2", "B"] and w["A2"] > 0.99 and sum(w.values()) == pytest.approx(1)
    assert expression_prior("ZZZ", {"A2": "A2"}, genes, v) == {}
    assert expression_prior("A", {"A": "A"}, genes, v) == {}  # only itself: nothing to borrow


def test_blend_moves_weight_from_co_expression_to_cell_shares():
    similar = {"A": 0.75, "B": 0.25}
    shares = {"A": 10, "B": 10, "C": 20}
    assert blend_prior(similar, shares, 1.0) == similar  # zero weights are left out
    assert blend_prior(similar, shares, 0.0) == {"C": 0.5, "A": 0.25, "B": 0.25}
    half = blend_prior(similar, shares, 0.5)
    assert half == pytest.approx({"A": 0.5, "B": 0.25, "C": 0.25})
    assert next(iter(half)) == "A"
    with pytest.raises(ValueError, match="trust"):
        blend_prior(similar, shares, 1.5)
    with pytest.raises(ValueError, match="positive"):
        blend_prior(similar, {"A": 0}, 0.5)


def paired_genes(n=400, seed=0):
    """Six genes in three co-expressed pairs (A, A2), (B, B2), (C, C2), and their vectors."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(3, n))
    x = np.stack([b + 0.2 * rng.normal(size=n) for b in base for _ in range(2)], axis=1)
    genes = ["A", "A2", "B", "B2", "C", "C2"]
    return genes, gene_vectors((x - x.mean(0)) / x.std(0), n_components=6)


def test_trust_is_high_when_co_expressed_genes_share_effects():
    genes, v = paired_genes()
    rng = np.random.default_rng(1)
    pair_effect = rng.normal(size=(3, 50))
    effects = {g: pair_effect[i // 2] + 0.05 * rng.normal(size=50) for i, g in enumerate(genes)}
    trust, errors = fit_trust(effects, dict.fromkeys(genes, 100), genes, v)
    assert trust == 1.0 and errors[-1] < 0.1 * errors[0]


def test_trust_is_low_when_effects_ignore_co_expression():
    genes, v = paired_genes()
    rng = np.random.default_rng(2)
    common = rng.normal(size=50)
    effects = {g: common + 0.5 * rng.normal(size=50) for g in genes}
    shares = {g: 50 + 10 * i for i, g in enumerate(genes)}
    trust, errors = fit_trust(effects, shares, genes, v)
    assert trust <= 0.2 and errors[0] < errors[-1]
    # each error is that of blend_prior's weights applied to the left-out perturbation
    direct = []
    for g in genes:
        others = [j for j in genes if j != g]
        w = blend_prior(
            expression_prior(g, {j: j for j in others}, genes, v),
            {j: shares[j] for j in others},
            0.3,
        )
        direct.append(np.mean((sum(x * effects[j] for j, x in w.items()) - effects[g]) ** 2))
    assert errors[3] == pytest.approx(np.mean(direct))


def test_trust_needs_enough_perturbations_to_leave_out():
    genes, v = paired_genes()
    effects = {"A": np.ones(5), "A2": np.ones(5), "NOT_A_GENE": np.zeros(5)}
    shares = dict.fromkeys(effects, 1)
    assert fit_trust(effects, shares, genes, v)[0] is None  # only A and A2 can be left out
    trust, errors = fit_trust(effects, shares, genes, v, min_candidates=2)
    assert trust is not None and len(errors) == 11
    with pytest.raises(ValueError, match="same perturbations"):
        fit_trust(effects, {"A": 1}, genes, v)


def test_registry_encodes_an_unseen_token_as_its_mix():
    obs = pd.DataFrame({"ko": ["ctrl", "A", "B"]})
    setup = {"perturbation_key": "ko", "control": "ctrl", "combination_sep": "+"}
    reg = CovariateRegistry.fit(obs, setup)
    new = pd.DataFrame({"ko": ["C", "A+C"]})
    with pytest.raises(InputError, match="unknown perturbation 'C'"):
        reg.encode(new)
    soft = {"ko": {"C": {"A": 0.25, "B": 0.75}}}
    rows = reg.encode(new, soft=soft)["ko"]
    idx = {t: i for i, t in enumerate(reg["ko"].tokens)}
    assert rows[0, idx["A"]] == 0.25 and rows[0, idx["B"]] == 0.75
    assert rows[1, idx["A"]] == 1.25  # combination: its own part plus the mix


def knock_out_model(adata, labels):
    """A small untrained model of ``adata`` with knock-out ``labels`` ("ctrl": control)."""
    from rnadiff import ModelConfig, NetworkConfig, PreprocessConfig, RNADiffusion

    adata.obs["ko"] = pd.Categorical(labels)
    RNADiffusion.setup_anndata(adata, perturbation_key="ko", control="ctrl")
    config = ModelConfig(
        network=NetworkConfig(width=32, depth=1, emb_dim=16),
        preprocess=PreprocessConfig(n_top_genes=None),
    )
    return RNADiffusion(adata, config=config)


def test_model_predicts_an_unseen_gene_knock_out_only_with_the_prior(kang_small, one_thread):
    from rnadiff import RNADiffusion, TrainConfig

    adata = kang_small
    genes = list(adata.var_names[:3])
    stim = (adata.obs.group_id == "stim").to_numpy()
    labels = np.where(stim, np.where(np.arange(adata.n_obs) % 2 == 0, genes[0], genes[1]), "ctrl")
    model = knock_out_model(adata, labels)
    model.train(config=TrainConfig(max_steps=5, batch_size=32), progress=False)
    with pytest.raises(InputError, match="pass prior=True"):
        model.generate({"ko": genes[2]}, n_cells=3, progress=False)
    out = model.generate({"ko": genes[2]}, n_cells=3, prior=True, steps=3, progress=False)
    mix = out.uns["rnadiff"]["perturbation_prior"][genes[2]]
    assert set(mix) == set(genes[:2]) and sum(mix.values()) == pytest.approx(1)
    with pytest.raises(InputError, match="not one of the model's genes"):
        model.generate({"ko": "NOT_A_GENE"}, n_cells=3, prior=True, progress=False)
    # the prior survives saving (it is part of the checkpoint)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        model.save(tmp)
        again = RNADiffusion.load(tmp)
    assert np.array_equal(again.gene_vectors, model.gene_vectors)
    assert again.prior == model.prior and model.prior["trust"] is None  # two seen genes: no fit
    same = again.generate({"ko": genes[2]}, n_cells=3, prior=True, steps=3, progress=False)
    assert np.allclose(same.X, out.X)


def test_model_blends_the_prior_with_its_fitted_trust(kang_small, one_thread):
    from rnadiff import TrainConfig

    adata = kang_small
    genes = list(adata.var_names[:5])
    stim = (adata.obs.group_id == "stim").to_numpy()
    labels = np.where(stim, np.array(genes[:4])[np.arange(adata.n_obs) % 4], "ctrl")
    model = knock_out_model(adata, labels)
    prior = model.prior
    assert prior["trust"] in prior["grid"] and len(prior["loo_error"]) == len(prior["grid"])
    assert prior["shares"] == {g: int((labels == g).sum()) for g in genes[:4]}
    chunked = _calibration.fit_prior(
        model, adata, chunk=7
    )  # the cells read a few at a time: same fit
    assert chunked["trust"] == prior["trust"] and chunked["shares"] == prior["shares"]
    assert np.allclose(chunked["loo_error"], prior["loo_error"], rtol=1e-9)
    model.train(config=TrainConfig(max_steps=3, batch_size=32), progress=False)
    out = model.generate({"ko": genes[4]}, n_cells=3, prior=True, steps=3, progress=False)
    mix = out.uns["rnadiff"]["perturbation_prior"][genes[4]]
    similar = expression_prior(
        genes[4], {g: g for g in genes[:4]}, model.preprocess.genes, model.gene_vectors
    )
    assert mix == pytest.approx(blend_prior(similar, prior["shares"], prior["trust"]))
    assert sum(mix.values()) == pytest.approx(1)
    # its effect is calibrated by the same mix of the seen perturbations' scales
    expected = sum(w * model.effect_scales[t] for t, w in mix.items())
    assert abs(expected - 1) > 0.01  # so that the check below can fail
    assert out.uns["rnadiff"]["effect_scales"][genes[4]] == pytest.approx(expected)


# ------------------------------------------------------------- trust in structure (drugs)
def _families(n_families=4, per=3, genes=30, noise=0.05, seed=0):
    """Drugs in families: same family = similar structure (similarity 0.9, else 0.1)."""
    rng = np.random.default_rng(seed)
    names = [f"d{f}_{i}" for f in range(n_families) for i in range(per)]
    family = {n: n.split("_")[0] for n in names}
    centers = {f: rng.normal(size=genes) for f in set(family.values())}
    return names, family, centers, rng, noise


def test_structure_trust_is_high_when_similar_structures_act_alike():
    from rnadiff.conditioning._prior import fit_structure_trust

    names, family, centers, rng, noise = _families()
    effects = {n: centers[family[n]] + noise * rng.normal(size=30) for n in names}
    shares = dict.fromkeys(names, 10)

    def similarity(a, b):
        return 0.9 if family[a] == family[b] else 0.1

    trust, errors = fit_structure_trust(effects, shares, names, similarity)
    assert trust == 1.0 and errors[-1] < errors[0] / 10


def test_structure_trust_is_zero_when_structure_says_nothing():
    from rnadiff.conditioning._prior import fit_structure_trust

    names, family, _centers, rng, _ = _families(n_families=6, per=4)
    shared = rng.normal(size=30)  # every drug: one shared response plus its own noise
    effects = {n: shared + 0.5 * rng.normal(size=30) for n in names}
    shares = dict.fromkeys(names, 10)

    def similarity(a, b):
        return 0.9 if family[a] == family[b] else 0.1

    trust, errors = fit_structure_trust(effects, shares, names, similarity)
    assert trust <= 0.2 and errors[0] < errors[-1]


def test_structure_trust_leaves_out_only_drugs_with_a_structure():
    from rnadiff.conditioning._prior import fit_structure_trust

    names, family, centers, rng, noise = _families(n_families=1, per=3)
    effects = {n: centers[family[n]] + noise * rng.normal(size=30) for n in names}
    effects["KO"] = 100 * rng.normal(size=30)  # a knock-out: in the average, never a neighbour
    shares = dict.fromkeys(effects, 10)
    calls = []

    def similarity(a, b):
        calls.append((a, b))
        return 0.5

    trust, _ = fit_structure_trust(effects, shares, names, similarity)
    assert trust is not None and all("KO" not in pair for pair in calls)
    assert fit_structure_trust(effects, shares, names[:2], similarity)[0] is None  # 2 < 3
