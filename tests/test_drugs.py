"""Drugs by structure, doses and gene embeddings, end to end on a small simulated screen."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from rnadiff import ConditioningConfig, InputError, ModelConfig, NetworkConfig, RNADiffusion
from rnadiff.data._molecules import check_table, read_smiles_table, table_from_obs
from rnadiff.datasets import simulate

DRUGS = ("Vorinostat", "Belinostat", "Imatinib", "Dasatinib", "Gefitinib")
NEW = "Panobinostat"  # never in training; a hydroxamate like Vorinostat and Belinostat
NEW_SMILES = "Cc1[nH]c2ccccc2c1CCNCc1ccc(/C=C/C(=O)NO)cc1"
SMALL = ModelConfig(network=NetworkConfig(width=32, depth=1, emb_dim=16))


@pytest.fixture(scope="module")
def screen():
    adata, _ = simulate(
        900,
        seed=2,
        n_genes=40,
        n_programs=6,
        n_genetic=2,
        n_combinations=0,
        drugs=DRUGS,
        n_cell_types=1,
        times=(24.0,),
        doses=(0.1, 1.0, 10.0),
    )
    return adata


def train(adata, config=SMALL, steps=40, **setup):
    adata = adata.copy()
    RNADiffusion.setup_anndata(
        adata, perturbation_key="perturbation", control="control", dose_key="dose", **setup
    )
    model = RNADiffusion(adata, config=config, seed=0)
    model.train(max_steps=steps, progress=False)
    return model


@pytest.fixture(scope="module")
def model(screen):
    held = (screen.obs["dose"] == 1.0).to_numpy() & (screen.obs["perturbation"] == "Imatinib")
    return train(screen[~held], smiles_key="smiles")


def controls(screen, n=30):
    return screen[(screen.obs["perturbation"] == "control").to_numpy()][:n].copy()


def test_registry_records_structures_and_dosed_tokens(model):
    cov = model.registry["perturbation"]
    assert dict(cov.molecules).keys() == set(DRUGS)
    assert set(cov.dosed) == set(DRUGS)  # knock-outs were measured at dose 0 only
    spec = model.denoiser.cond_encoder.encoders["perturbation"]
    assert spec.has_molecule.sum() == len(DRUGS)


def test_a_knock_out_paired_with_a_drug_does_not_follow_the_dose():
    # the pair's dose is the drug's; the knock-out, measured alone at dose 0 (or without a
    # dose), acts in full. A token measured only in dosed pairs follows the dose; one measured
    # alone at a positive dose does, whatever else it was measured with
    from rnadiff.data._covariates import Covariate, dosed_tokens

    cov = Covariate("p", "perturbation", sep="+", control="ctrl")
    values = np.array(["ctrl", "KO", "DrugA", "KO+DrugA", "KO2", "DrugB+DrugC", "DrugA",
                       "KO2+DrugA"])  # fmt: skip
    dose = np.array([0.0, 0.0, 10.0, 10.0, np.nan, 1.0, 0.0, 10.0])
    assert dosed_tokens(cov, values, dose) == ("DrugA", "DrugB", "DrugC")
    # before: every part of a dosed pair followed the dose, so the knock-out alone (dose 0)
    # lost its effect
    adata, _ = simulate(
        600, seed=0, n_genes=30, n_programs=4, n_genetic=2, n_drugs=2, n_combinations=4,
        n_cell_types=1, times=(24.0,), doses=(10.0,),
    )  # fmt: skip
    setup = dict(perturbation_key="perturbation", control="control", dose_key="dose")
    RNADiffusion.setup_anndata(adata, **setup)
    cov = RNADiffusion(adata, config=SMALL).registry["perturbation"]
    singles = adata.obs.groupby("perturbation", observed=True).dose.max()
    knock_outs = {p for p, d in singles.items() if "+" not in p and d == 0} - {"control"}
    assert knock_outs and not knock_outs & set(cov.dosed)
    assert set(cov.dosed) == {p for p, d in singles.items() if "+" not in p and d > 0}


def test_unseen_drug_needs_its_structure_then_is_predicted(model, screen):
    src = controls(screen)
    with pytest.raises(InputError, match="add_molecules"):
        model.predict(src, target={"perturbation": NEW, "dose": 1.0}, progress=False)
    model.add_molecules({NEW: NEW_SMILES})
    out = model.predict(src, target={"perturbation": NEW, "dose": 1.0}, progress=False)
    assert out.uns["rnadiff"]["embedded_from_features"] == [NEW]
    assert np.isfinite(out.X).all() and out.n_obs == src.n_obs
    assert NEW not in model.registry["perturbation"].tokens  # the model's vocabulary is kept
    gen = model.generate({"perturbation": NEW, "dose": 10.0}, n_cells=5, progress=False)
    assert gen.n_obs == 5


def test_an_unseen_drugs_mean_change_is_the_measured_drugs_blend(model, screen):
    """Its cells come from its structure; their mean change is moved to the blend of the
    measured drugs' (anchored) changes at that dose, weighted as the fitted trust says."""
    fit = model.prior
    assert fit["structure_trust"] is not None and len(fit["structure_loo_error"]) == 11
    model.add_molecules({NEW: NEW_SMILES})
    src = controls(screen)
    kw = dict(target={"perturbation": NEW, "dose": 1.0}, progress=False, seed=2)
    out = model.predict(src, **kw)
    used = out.uns["rnadiff"]["unseen_drug_means"][NEW]
    assert sum(used.values()) == pytest.approx(1.0) and "control" not in used
    assert set(used) >= {"Vorinostat", "Belinostat"}  # both hydroxamates, the nearest
    assert set(used) <= set(DRUGS)  # the average is the drugs': no knock-out (G...) in it
    anchors, level = model.anchors, model.anchors.residuals + model.anchors.means

    def anchored_mean(p):
        return anchors._apply(anchors.combination((p,), np.array([1.0])), level)

    expected = sum(w * (anchored_mean(k) - anchored_mean("control")) for k, w in used.items())
    genes = list(model.genes)
    change = out[:, genes].X.mean(0) - model.log_expression(src).mean(0)
    np.testing.assert_allclose(change, expected, atol=2e-3)
    own = model.predict(src, anchor=False, **kw)  # the network's own prediction
    assert own.uns["rnadiff"]["unseen_drug_means"] == {}
    assert np.abs(own.X - out.X).max() > 1e-2


def test_ranking_scores_an_unseen_drug_by_the_blend_predict_gives(model, screen):
    # rank_perturbations' generation score decodes every candidate from the encoded reference
    # and corrects the cells as predict does: an unseen drug's change is the measured drugs'
    # blend, so predict's anchored cells are reproduced (the network's own are not)
    model.add_molecules({NEW: NEW_SMILES})
    src = controls(screen)
    target = model.predict(src, target={"perturbation": NEW, "dose": 10.0}, progress=False)
    assert target.uns["rnadiff"]["unseen_drug_means"][NEW]
    kw = dict(candidates=[NEW, *DRUGS], context={"dose": 10.0}, reference=src, n_cells=src.n_obs)
    kw |= dict(n_noise_levels=2, n_draws=1, progress=False)
    anchored = model.rank_perturbations(target, **kw).set_index("perturbation")
    network = model.rank_perturbations(target, anchor=False, **kw).set_index("perturbation")
    miss_anchored = 1 - anchored.loc[NEW, "phenotype_score"]
    miss_network = 1 - network.loc[NEW, "phenotype_score"]
    assert miss_anchored < 1e-3 and miss_network > 10 * miss_anchored  # 2e-4 vs 0.9 here


def test_invalid_smiles_names_the_drug(model):
    with pytest.raises(InputError, match="'Bad'"):
        model.add_molecules({"Bad": "C1CC(("})


def test_dose_zero_predicts_the_control(model, screen):
    src = controls(screen)
    kw = dict(progress=False, seed=3)
    zero = model.predict(src, target={"perturbation": "Vorinostat", "dose": 0.0}, **kw)
    ctrl = model.predict(src, target={"perturbation": "control", "dose": 0.0}, **kw)
    np.testing.assert_allclose(zero.X, ctrl.X, atol=1e-5)


def test_a_dosed_drug_without_a_dose_on_vehicle_cells_warns(model, screen, caplog):
    src = controls(screen, 5)  # their own dose is 0
    with caplog.at_level(logging.WARNING, logger="rnadiff"):
        model.predict(src, target={"perturbation": "Imatinib"}, progress=False)
    assert "5 source cells keep their own dose of 0" in caplog.text
    assert "Imatinib at dose 0 is the control" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rnadiff"):  # dose given, or not dosed
        model.predict(src, target={"perturbation": "Imatinib", "dose": 0.0}, progress=False)
        model.predict(src, target={"perturbation": "Imatinib", "dose": 1.0}, progress=False)
        knock_out = next(p for p in model.registry["perturbation"].tokens if p.startswith("G"))
        model.predict(src, target={"perturbation": knock_out}, progress=False)
    assert "is the control" not in caplog.text


def test_interpolates_between_the_drugs_own_doses(model, screen):
    src = controls(screen)
    out = model.predict(src, target={"perturbation": "Imatinib", "dose": 1.0}, progress=False)
    # 1.0 uM was measured for the other drugs, not for Imatinib: its own 0.1 and 10 uM
    assert out.uns["rnadiff"]["interpolated_cells"] == {"dose": src.n_obs}
    other = model.predict(src, target={"perturbation": "Dasatinib", "dose": 1.0}, progress=False)
    assert other.uns["rnadiff"]["interpolated_cells"] == {}


def test_outside_the_measured_range_warns(model, screen, caplog):
    src = controls(screen, 5)
    with caplog.at_level(logging.WARNING, logger="rnadiff"):
        model.predict(src, target={"perturbation": "Dasatinib", "dose": 50.0}, progress=False)
    assert "outside the range measured" in caplog.text


def test_save_load_keeps_structures_and_predictions(model, screen, tmp_path):
    model.add_molecules({NEW: NEW_SMILES})
    model.save(tmp_path / "m")
    loaded = RNADiffusion.load(tmp_path / "m")
    src = controls(screen, 10)
    kw = dict(target={"perturbation": NEW, "dose": 1.0}, progress=False, seed=1)
    np.testing.assert_allclose(loaded.predict(src, **kw).X, model.predict(src, **kw).X, atol=1e-5)


def test_rank_accepts_candidates_by_smiles(model, screen):
    target = screen[(screen.obs["perturbation"] == "Vorinostat").to_numpy()][:40]
    table = model.rank_perturbations(
        target,
        candidates={
            "Vorinostat": dict(model.registry["perturbation"].molecules)["Vorinostat"],
            "Candidate-X": NEW_SMILES,
        },
        context={"dose": 10.0},
        n_cells=20,
        n_noise_levels=2,
        n_draws=1,
        progress=False,
    )
    assert set(table["perturbation"]) == {"Vorinostat", "Candidate-X"}


def test_model_without_structures_refuses_smiles_candidates(screen):
    plain = train(screen, steps=5)
    with pytest.raises(InputError, match="does not embed drugs by structure"):
        plain.rank_perturbations(
            screen[:20], candidates={"X": NEW_SMILES}, n_cells=5, progress=False
        )


def test_dose_response_embedding_is_the_old_network(screen):
    old = train(
        screen,
        config=SMALL.__class__(
            network=SMALL.network, conditioning=ConditioningConfig(dose_response="embedding")
        ),
        steps=2,
    )
    enc = old.denoiser.cond_encoder
    assert "dose" in enc.encoders and not hasattr(enc.encoders["perturbation"], "hill")
    assert (
        ModelConfig.from_dict(
            {k: v for k, v in SMALL.to_dict().items() if k != "conditioning"}
        ).conditioning.dose_response
        == "embedding"
    )  # checkpoints of before: as they were


def test_a_learned_unknown_dose_level_trains_saves_and_loads(screen, tmp_path):
    config = SMALL.__class__(
        network=SMALL.network, conditioning=ConditioningConfig(dose_unknown="learned")
    )
    model = train(screen, config=config, steps=20, smiles_key="smiles")
    enc = model.denoiser.cond_encoder.encoders["perturbation"]
    assert enc.unknown_learned and enc.unknown.shape == (len(enc.weight),)
    moved = enc.unknown_head.weight.detach().abs().sum() + enc.unknown.detach().abs().sum()
    assert moved > 0  # trained through the dropped doses
    model.save(tmp_path / "m")
    loaded = RNADiffusion.load(tmp_path / "m")
    assert loaded.config.conditioning.dose_unknown == "learned"
    src, kw = controls(screen), dict(target={"perturbation": "Imatinib"}, steps=3, progress=False)
    np.testing.assert_allclose(loaded.predict(src, **kw).X, model.predict(src, **kw).X, atol=1e-5)


def test_gene_embeddings_describe_unseen_knockouts(screen):
    genes = list(screen.var_names)
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.normal(size=(len(genes), 8)), index=genes)
    kos = sorted(set(screen.obs["perturbation"]) - set(DRUGS) - {"control"})
    held = (screen.obs["perturbation"] == kos[0]).to_numpy()
    adata = screen[~held].copy()
    RNADiffusion.setup_anndata(adata, perturbation_key="perturbation", control="control")
    model = RNADiffusion(adata, config=SMALL, gene_embeddings=table, seed=0)
    assert model.registry["perturbation"].gene_embedding_dim == 8
    model.train(max_steps=5, progress=False)
    out = model.predict(controls(screen, 5), perturbation=kos[0], progress=False)
    assert out.uns["rnadiff"]["embedded_from_features"] == [kos[0]]
    with pytest.raises(InputError, match="numbers only"):
        RNADiffusion(adata, config=SMALL, gene_embeddings=table.astype(str) + "x")


def test_smiles_tables_are_checked(tmp_path):
    with pytest.raises(InputError, match="'B'"):
        check_table({"A": "CCO", "B": "not a smiles"})
    obs = pd.DataFrame(
        {"p": ["A", "A", "B", "A+C", "ctrl"], "s": ["CCO", "CCO", "", "CCO.CCN", ""]}
    )
    parts = lambda v: v.split("+")  # noqa: E731
    assert table_from_obs(obs, "p", "s", parts=parts, control="ctrl") == {"A": "CCO", "C": "CCN"}
    obs.loc[1, "s"] = "CCC"
    with pytest.raises(InputError, match="two SMILES"):
        table_from_obs(obs, "p", "s", parts=parts, control="ctrl")
    path = tmp_path / "t.csv"
    path.write_text("name,smiles\nA,CCO\nB,c1ccccc1\n")
    assert read_smiles_table(path) == {"A": "CCO", "B": "c1ccccc1"}
    path.write_text("A,CCO,kinase\n")
    assert read_smiles_table(path) == {"A": "CCO"}


def test_cli_trains_with_smiles_and_ranks_new_compounds(screen, tmp_path, monkeypatch, capsys):
    import sys

    from typer.testing import CliRunner

    from rnadiff.cli import app, main

    data = tmp_path / "screen.h5ad"
    adata = screen.copy()
    adata.obs = adata.obs.drop(columns="smiles")
    adata.write_h5ad(data)
    table = tmp_path / "drugs.csv"
    smiles = table_from_obs(
        screen.obs, "perturbation", "smiles", parts=lambda v: v.split("+"), control="control"
    )
    table.write_text("name,smiles\n" + "".join(f"{k},{v}\n" for k, v in smiles.items()))
    genes = tmp_path / "genes.tsv"
    rng = np.random.default_rng(0)
    pd.DataFrame(rng.normal(size=(screen.n_vars, 4)), index=screen.var_names).to_csv(
        genes, sep="\t"
    )
    out = tmp_path / "model"
    runner = CliRunner()
    common = ["--width", "32", "--depth", "1", "--max-steps", "10", "--quiet"]
    result = runner.invoke(
        app,
        ["train", "--data", str(data), "--out", str(out), "--perturbation-key", "perturbation",
         "--control", "control", "--dose-key", "dose", "--smiles", str(table),
         "--gene-embeddings", str(genes), "--dose-response", "hill+embedding", *common],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    model = RNADiffusion.load(out)
    assert model.config.conditioning.dose_response == "hill+embedding"
    assert dict(model.registry["perturbation"].molecules).keys() == set(DRUGS)
    assert model.registry["perturbation"].gene_embedding_dim == 4
    new = tmp_path / "new.csv"
    new.write_text(f"{NEW},{NEW_SMILES}\n")
    ranked = tmp_path / "ranked.csv"
    result = runner.invoke(
        app,
        ["rank", "--model", str(out), "--up", str(screen.var_names[0]), "--smiles", str(new),
         "--context", "dose=1.0", "--n", "10", "--out", str(ranked), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert set(pd.read_csv(ranked)["perturbation"]) == set(DRUGS) | {NEW}
    source = tmp_path / "controls.h5ad"
    controls(screen, 5).write_h5ad(source)
    pred = tmp_path / "pred.h5ad"
    result = runner.invoke(
        app,
        ["predict", "--model", str(out), "--source", str(source), "--perturbation", NEW,
         "--set", "dose=1.0", "--smiles", str(new), "--steps", "4", "--out", str(pred)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert ad.read_h5ad(pred).uns["rnadiff"]["embedded_from_features"] == [NEW]
    bad = tmp_path / "bad.csv"
    bad.write_text("X,not-a-smiles\n")
    up = str(screen.var_names[0])
    for args, needle in (
        (["rank", "--model", out, "--up", up, "--smiles", bad], "'X'"),
        (["train", "--data", data, "--out", tmp_path / "m2", "--dose-response", "sigmoid"],
         "dose_response"),
        # a new drug without its SMILES: the hint names the option, not the Python method
        (["predict", "--model", out, "--source", source, "--perturbation", NEW, "--set",
          "dose=1.0", "--out", tmp_path / "p2.h5ad"], "--smiles FILE"),
    ):  # fmt: skip
        monkeypatch.setattr(sys, "argv", ["rnadiff", *map(str, args)])
        with pytest.raises(SystemExit) as info:
            main()
        err = capsys.readouterr().err
        assert info.value.code == 2 and err.startswith("error:") and needle in err, err
        assert "add_molecules" not in err and "setup_anndata" not in err, err


def test_unmeasured_combinations_are_predicted_in_their_own_context(tmp_path):
    """A pair never measured anywhere has no context to take its effect from: it is not
    transferred; it is composed from its parts' effects in the cell's own context (the
    network's joint conditional with transfer="none") and it takes the mean of its parts'
    calibrated effect scales."""
    adata, _ = simulate(
        1200, seed=4, n_genes=40, n_programs=6, n_genetic=2, n_drugs=2, n_combinations=1,
        n_cell_types=2, times=(24.0,), doses=(10.0,),
    )  # fmt: skip
    pair = adata.obs["perturbation"].astype(str).str.contains("+", regex=False).to_numpy()
    combo = str(adata.obs["perturbation"][pair].iloc[0])
    model = train(adata[~pair], cell_type_key="cell_type", steps=30)
    engine = model.engine
    obs = adata.obs[pair].iloc[:4].copy()
    assert engine.never_measured(obs).all()
    assert not engine.transfer_plan(obs, "compose").mask.any()
    single = adata.obs[~pair & (adata.obs["perturbation"] != "control").to_numpy()].iloc[:4]
    assert not engine.never_measured(single).any()
    scales = engine.cell_effect_scales(obs)
    parts = combo.split("+")
    assert engine.never_measured(obs, combinations=True).all()
    composed = model.predict(controls(adata, 5), perturbation=combo, progress=False)
    joint = model.predict(controls(adata, 5), perturbation=combo, transfer="none", progress=False)
    assert not np.allclose(composed.X, joint.X)  # composed from the parts unless transfer="none"
    assert scales is not None  # the parts were calibrated (scales other than 1)
    expected = np.mean([model.effect_scales.get(p, 1.0) for p in sorted(parts)])
    assert scales == pytest.approx(expected)
