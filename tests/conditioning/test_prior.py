"""The expression prior of unseen perturbations: gene vectors, weights, soft encodings, model."""

import numpy as np
import pandas as pd
import pytest

from rnadiff.conditioning.prior import expression_prior, gene_vectors
from rnadiff.data.covariates import CovariateRegistry
from rnadiff.errors import InputError


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


def test_model_predicts_an_unseen_gene_knock_out_only_with_the_prior(kang_small, one_thread):
    from rnadiff import ModelConfig, NetworkConfig, PreprocessConfig, RNADiffusion, TrainConfig

    adata = kang_small
    genes = list(adata.var_names[:3])
    stim = (adata.obs.group_id == "stim").to_numpy()
    labels = np.where(stim, np.where(np.arange(adata.n_obs) % 2 == 0, genes[0], genes[1]), "ctrl")
    adata.obs["ko"] = pd.Categorical(labels)
    RNADiffusion.setup_anndata(adata, perturbation_key="ko", control="ctrl")
    config = ModelConfig(
        network=NetworkConfig(width=32, depth=1, emb_dim=16),
        preprocess=PreprocessConfig(n_top_genes=None),
    )
    model = RNADiffusion(adata, config=config)
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
    same = again.generate({"ko": genes[2]}, n_cells=3, prior=True, steps=3, progress=False)
    assert np.allclose(same.X, out.X)
