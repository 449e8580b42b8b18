"""User errors of the command line (and of the API behind it) on a small slice of the Kang data.

Each error is an ``rnadiff.InputError``, which ``rnadiff.cli.main`` turns into one line
``error: ...`` with exit code 2. ``main`` runs in-process here (no interpreter start per test).
"""

from __future__ import annotations

import json
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from rnadiff import (
    InputError,
    ModelConfig,
    NetworkConfig,
    PreprocessConfig,
    RNADiffusion,
    TrainConfig,
)
from rnadiff.cli import app, main

runner = CliRunner()
SETUP = {"perturbation_key": "group_id", "control": "ctrl", "cell_type_key": "cluster_id"}
TINY = ["--width", "16", "--depth", "1", "--n-top-genes", "40", "--quiet"]
pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def cells(_kang_small_session) -> ad.AnnData:
    """200 Kang cells x 300 genes (raw counts) with numeric dose (0/10) and time (0/6) columns."""
    adata = _kang_small_session[::2].copy()
    rng = np.random.default_rng(0)
    adata.obs["dose"] = rng.choice([0.0, 10.0], adata.n_obs)
    adata.obs["time"] = rng.choice([0.0, 6.0], adata.n_obs)
    return adata


@pytest.fixture(scope="module")
def files(cells, tmp_path_factory):
    """The cells as .h5ad: counts, log-normalized, and a tiny trained model of each."""
    root = tmp_path_factory.mktemp("checks")
    paths = {"counts": root / "counts.h5ad", "lognorm": root / "lognorm.h5ad"}
    cells.write_h5ad(paths["counts"])
    log = cells.copy()
    log.X = sp.csr_matrix(log.layers["logcounts"])
    log.write_h5ad(paths["lognorm"])
    config = ModelConfig(
        network=NetworkConfig(width=16, depth=1, emb_dim=8),
        preprocess=PreprocessConfig(n_top_genes=40),
    )
    for name, adata, setup in (
        ("counts", cells.copy(), {**SETUP, "dose_key": "dose", "time_key": "time"}),
        ("lognorm", log, SETUP),
    ):
        RNADiffusion.setup_anndata(adata, **setup)
        model = RNADiffusion(adata, config=config)
        model.train(config=TrainConfig(max_steps=2, calibration_cells=0), progress=False)
        paths[f"model_{name}"] = root / f"model_{name}"
        model.save(paths[f"model_{name}"])
    return paths


def run_main(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """``rnadiff ARGS`` through the console entry point: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["rnadiff", *[str(a) for a in args]])
    with pytest.raises(SystemExit) as info:
        main()
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


@pytest.fixture
def fails(monkeypatch, capsys):
    """``fails(*args, *needles)``: the command exits with code 2 and one line naming them."""

    def check(args, *needles: str) -> str:
        code, _, err = run_main(monkeypatch, capsys, *args)
        assert code == 2, err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        for needle in needles:
            assert needle in err, f"{needle!r} not in {err!r}"
        return err

    return check


@pytest.fixture
def succeeds(monkeypatch, capsys):
    def check(*args) -> tuple[str, str]:
        code, out, err = run_main(monkeypatch, capsys, *args)
        assert code in (0, None), err
        return out, err

    return check


# ------------------------------------- 1. a log-normalized model given counts
def test_lognorm_model_rejects_counts_in_the_api(files, cells):
    model = RNADiffusion.load(files["model_lognorm"])
    assert model.preprocess.input_type == "lognorm"
    src = cells[(cells.obs["group_id"] == "ctrl").to_numpy()][:20].copy()
    unlogged = src.copy()
    unlogged.X = unlogged.X * np.float32(1.5)  # normalized-like, non-integers above 30
    for data, found in ((src, "raw counts (integers)"), (unlogged, "normalized unlogged")):
        with pytest.raises(InputError, match="trained on log-normalized values") as info:
            model.predict(data, perturbation="stim", steps=2, progress=False)
        assert found in str(info.value)
        with pytest.raises(InputError, match="log-normalized values"):
            model.denoise(data, sigma=0.5, progress=False)
    log = src.copy()
    log.X = sp.csr_matrix(log.layers["logcounts"])
    assert model.predict(log, perturbation="stim", steps=2, progress=False).n_obs == 20


def test_lognorm_model_rejects_counts_on_the_command_line(files, fails, tmp_path):
    args = ["predict", "--model", files["model_lognorm"], "--source", files["counts"]]
    fails(
        [*args, "--perturbation", "stim", "--out", tmp_path / "p.h5ad", "--quiet"],
        "trained on log-normalized values",
        "raw counts",
    )
    assert not (tmp_path / "p.h5ad").exists()


def test_declared_lognorm_training_data_with_large_integers_is_rejected(cells):
    adata = cells.copy()
    RNADiffusion.setup_anndata(adata, **SETUP)
    config = ModelConfig(preprocess=PreprocessConfig(input="lognorm", n_top_genes=40))
    with pytest.raises(InputError, match=r"input='lognorm'.*30 or more"):
        RNADiffusion(adata, config=config)


# ------------------------------------------------------ 2. a KEY given twice
@pytest.mark.parametrize(
    ("extra", "option"),
    [
        (["--where", "group_id=ctrl", "--where", "group_id=stim"], "--where"),
        (["--set", "time=0", "--set", "time=6"], "--set"),
    ],
)
def test_a_key_given_twice_is_an_error(files, fails, tmp_path, extra, option):
    args = ["predict", "--model", files["model_counts"], "--source", files["counts"]]
    args += ["--perturbation", "stim", "--out", tmp_path / "p.h5ad", "--quiet", *extra]
    fails(args, option, "given twice", extra[1].split("=")[0])


def test_a_condition_given_twice_is_an_error(files, fails, tmp_path):
    args = ["generate", "--model", files["model_counts"], "--out", tmp_path / "g.h5ad"]
    args += ["--condition", "cluster_id=B cells", "--condition", "cluster_id=CD4 T cells"]
    fails(args, "--condition", "'cluster_id' is given twice")


# --------------------------------------------------------- 3. --conditions-csv
def test_conditions_csv_errors(files, fails, tmp_path):
    base = ["generate", "--model", files["model_counts"], "--out", tmp_path / "g.h5ad"]
    good = tmp_path / "conds.csv"
    good.write_text("group_id\nstim\n")
    fails([*base, "--conditions-csv", good, "--condition", "group_id=ctrl"], "not both")
    fails([*base, "--conditions-csv", tmp_path / "none.csv"], "file not found", "none.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    fails([*base, "--conditions-csv", empty], "empty.csv is empty")
    header = tmp_path / "header.csv"
    header.write_text("group_id,cluster_id\n")
    fails([*base, "--conditions-csv", header], "no conditions")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text('group_id\n"stim\n')  # an unclosed quote
    fails([*base, "--conditions-csv", ragged], "--conditions-csv", "ragged.csv")
    fails([*base, "--conditions-csv", tmp_path], "is a directory")
    assert not (tmp_path / "g.h5ad").exists()


# --------------------------------------------- 4. continuous covariates as numbers
def test_continuous_values_are_numbers(files, succeeds, fails, tmp_path):
    gen = tmp_path / "g.h5ad"
    succeeds(
        "generate", "--model", files["model_counts"], "--out", gen, "--condition",
        "group_id=stim", "--condition", "dose=10", "--n", "3", "--steps", "2", "--quiet",
    )  # fmt: skip
    obs = ad.read_h5ad(gen).obs
    assert obs["dose"].dtype == np.float64 and (obs["dose"] == 10.0).all()
    pred = tmp_path / "p.h5ad"
    succeeds(
        "predict", "--model", files["model_counts"], "--source", files["counts"], "--out", pred,
        "--where", "dose=0", "--where", "time=6.0", "--perturbation", "stim", "--set", "time=0",
        "--steps", "2", "--quiet",
    )  # fmt: skip
    src = ad.read_h5ad(files["counts"]).obs
    expected = src.index[(src["dose"] == 0) & (src["time"] == 6)]
    out = ad.read_h5ad(pred).obs
    assert len(expected) > 0 and list(out.index) == list(expected)
    assert out["time"].dtype == np.float64 and (out["time"] == 0.0).all()
    base = ["--model", files["model_counts"], "--out", tmp_path / "x.h5ad", "--quiet"]
    fails(["generate", *base, "--condition", "dose=high"], "'dose' is continuous", "'high'")
    fails(
        ["predict", *base, "--source", files["counts"], "--where", "dose=low", "--set", "time=0"],
        "--where dose=low",
        "holds numbers",
    )


# ------------------------------------------------------------ 5. rank settings
def test_rank_needs_a_target_and_valid_counts(files, fails):
    base = ["rank", "--model", files["model_counts"], "--quiet"]
    fails(base, "one of them is required")
    fails([*base, "--target", files["counts"], "--up", "ISG15"], "not both")
    fails([*base, "--up", "ISG15", "--top", "-1"], "--top must be >= 0")
    fails([*base, "--up", "ISG15", "--n", "0"], "--n must be at least 1")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"n_cells": 0}, "n_cells"),
        ({"max_target_cells": 0}, "max_target_cells"),
        ({"n_noise_levels": 0}, "n_noise_levels"),
        ({"n_draws": 0}, "n_draws"),
        ({"n_draws": 1.5}, "n_draws"),
        ({"noise_range": (0.0, 1.0)}, "0 < lo <= hi"),
        ({"noise_range": (2.0, 1.0)}, "0 < lo <= hi"),
        ({"noise_range": (1.0, float("inf"))}, "finite"),
        ({"noise_range": (1.0,)}, "two numbers"),
    ],
)
def test_rank_perturbations_checks_its_settings(files, kwargs, needle):
    model = RNADiffusion.load(files["model_counts"])
    with pytest.raises(InputError, match=needle.replace("(", r"\(")):
        model.rank_perturbations(ad.read_h5ad(files["counts"]), progress=False, **kwargs)


# ------------------------------------------------------- 6. train --out / --resume
def test_train_out_that_cannot_be_created(files, fails, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    args = ["train", "--data", files["counts"], "--out", blocker / "model", "--max-steps", "1"]
    fails([*args, *TINY], "--out", "cannot create the folder")


def test_resume_says_which_options_it_ignores(files, succeeds, tmp_path):
    out = tmp_path / "model"
    common = ["--data", files["counts"], "--out", out, "--perturbation-key", "group_id"]
    succeeds("train", *common, "--control", "ctrl", "--max-steps", "2", *TINY)
    text, err = succeeds(
        "train", "--data", files["counts"], "--out", out, "--resume", "--max-steps", "3",
        "--lr", "0.1", "--batch-size", "7", "--quiet",
    )  # fmt: skip
    assert "resuming from step 2" in text
    assert "keeps the checkpoint's model and training settings" in err
    assert "ignored: --batch-size, --lr" in err or "ignored: --lr, --batch-size" in err
    model = RNADiffusion.load(out)
    assert model.step == 3 and model.train_config.lr != 0.1
    help_text = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "300"}).output
    assert "checkpoint's model and training settings" in help_text


# ------------------------------------------------------------------ 7. --max-epochs
def test_train_max_epochs(files, succeeds, fails, tmp_path):
    help_text = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "300"}).output
    assert "--max-epochs" in help_text and "Passes over the training cells" in help_text
    out = tmp_path / "model"
    succeeds(
        "train", "--data", files["counts"], "--out", out, "--perturbation-key", "group_id",
        "--control", "ctrl", "--max-epochs", "1", "--max-steps", "50", "--batch-size", "64",
        "--calibration-cells", "0", *TINY,
    )  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert config["train_config"]["max_epochs"] == 1.0
    fails(["train", "--data", files["counts"], "--out", out, "--max-epochs", "-1"], "max-epochs")


# ------------------------------------------------------------ 8. help and messages
def test_demo_data_that_is_a_directory(fails, tmp_path):
    fails(["demo", "--data", tmp_path, "--out", tmp_path / "demo"], "is a directory", ".h5ad")
    assert not (tmp_path / "demo").exists()


def test_train_input_help_mentions_the_layer():
    help_text = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "300"}).output
    text = " ".join(help_text.split())
    assert "--layer" in text and "layers['counts']" in text  # where expression is read


# --------------------------------------------------------- 9. evaluate's genes
def test_evaluate_gene_mismatch_names_no_model(files, fails, tmp_path):
    pred = ad.AnnData(
        X=np.ones((4, 3), dtype=np.float32),
        var=pd.DataFrame(index=["NOTAGENE1", "NOTAGENE2", "NOTAGENE3"]),
    )
    pred.write_h5ad(tmp_path / "pred.h5ad")
    err = fails(
        ["evaluate", "--pred", tmp_path / "pred.h5ad", "--real", files["counts"]],
        "genes do not match",
        "predicted cells",
        "NOTAGENE",
    )
    assert "model" not in err and "training" not in err


# ------------------------------------------- 10. output files are never the user's
def test_outputs_never_replace_a_users_file_or_an_input(files, fails, succeeds, tmp_path):
    import h5py

    model, data = files["model_counts"], tmp_path / "mine.h5ad"
    data.write_bytes(files["counts"].read_bytes())  # the user's own data file
    before = data.read_bytes()
    predict = ["predict", "--model", model, "--where", "group_id=ctrl", "--perturbation", "stim"]
    predict += ["--quiet"]
    # the input itself, or another file of the user's: refused before any work, untouched
    fails([*predict, "--source", data, "--out", data], "--out", "not written by rnadiff")
    assert data.read_bytes() == before
    theirs = tmp_path / "theirs.h5ad"
    theirs.write_bytes(before)
    fails([*predict, "--source", data, "--out", theirs], "--out", "not written by rnadiff")
    assert theirs.read_bytes() == before
    # a file rnadiff wrote is replaced (a rerun); but never while it is the command's input
    out = tmp_path / "pred.h5ad"
    succeeds(*predict, "--source", data, "--out", out)
    with h5py.File(out, "r") as f:
        assert "rnadiff" in f.attrs  # marked as ours
    succeeds(*predict, "--source", data, "--out", out)
    again = [*predict[:3], "--where", "group_id=stim", *predict[5:], "--source", out]
    fails([*again, "--out", out], "--out", "is an input of this command")
    # an input of an earlier command in the same process is not one of the next command's
    succeeds(*again, "--out", tmp_path / "other.h5ad")
    succeeds(*predict, "--source", data, "--out", out)
    # a CSV: an earlier table of the same columns is replaced, anything else is not
    evaluate = ["evaluate", "--pred", out, "--real", data, "--real-where", "group_id=stim"]
    evaluate += ["--control-where", "group_id=ctrl"]
    metrics = tmp_path / "metrics.csv"
    succeeds(*evaluate, "--out", metrics)
    first = metrics.read_text()
    succeeds(*evaluate, "--out", metrics)
    assert metrics.read_text().splitlines()[0] == first.splitlines()[0]
    notes = tmp_path / "notes.csv"
    notes.write_text("my,own\n1,2\n")
    fails([*evaluate, "--out", notes], "--out", "not written by rnadiff")
    assert notes.read_text() == "my,own\n1,2\n"
