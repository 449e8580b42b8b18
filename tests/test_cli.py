"""The command line on a small slice of the real Kang data: train, resume, generate, predict."""

import json
import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from rnadiff import RNADiffusion
from rnadiff.cli import app
from rnadiff.conditioning._calibration import widen

DATA = Path(os.environ.get("RNADIFF_DATA_DIR", Path(__file__).resolve().parents[2] / "shared/data"))
KANG = DATA / "kang2018_ifnb_pbmc_counts.h5ad"
runner = CliRunner()
TINY = ["--width", "32", "--depth", "1", "--n-top-genes", "60", "--batch-size", "32", "--quiet"]


@pytest.fixture(scope="module")
def kang_file(tmp_path_factory):
    if not KANG.is_file():
        pytest.skip(f"real data not found at {KANG}")
    adata = ad.read_h5ad(KANG)
    rng = np.random.default_rng(0)
    adata = adata[np.sort(rng.choice(adata.n_obs, 200, replace=False))].copy()
    path = tmp_path_factory.mktemp("cli") / "kang.h5ad"
    adata.write_h5ad(path)
    return path


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def model_dir(kang_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "model"
    text = invoke(
        "train",
        "--data",
        kang_file,
        "--out",
        out,
        "--perturbation-key",
        "group_id",
        "--control",
        "ctrl",
        "--cell-type-key",
        "cluster_id",
        "--max-steps",
        "10",
        "--checkpoint-every",
        "5",
        "--p-mean",
        "0.5",
        *TINY,
    )
    assert "raw counts" in text  # the detected input is stated
    assert (out / "config.json").is_file() and (out / "weights.safetensors").is_file()
    return out


def test_train_then_resume_continues_from_the_checkpoint(model_dir, kang_file):
    assert RNADiffusion.load(model_dir).step == 10
    text = invoke(
        "train", "--data", kang_file, "--out", model_dir, "--max-steps", "14", "--resume", "--quiet"
    )
    assert "resuming from step 10" in text
    resumed = RNADiffusion.load(model_dir)
    assert resumed.step == 14
    assert resumed.config.diffusion.p_mean == 0.5  # --p-mean is kept in the checkpoint


def test_generate_writes_cells_with_conditions(model_dir, tmp_path):
    out = tmp_path / "gen.h5ad"
    text = invoke(
        "generate",
        "--model",
        model_dir,
        "--condition",
        "group_id=stim",
        "--condition",
        "cluster_id=B cells",
        "--n",
        "7",
        "--steps",
        "4",
        "--guidance",
        "group_id=2",
        "--out",
        out,
        "--quiet",
    )
    assert "wrote 7 cells" in text
    gen = ad.read_h5ad(out)
    assert gen.n_obs == 7
    assert set(gen.obs["group_id"]) == {"stim"} and set(gen.obs["cluster_id"]) == {"B cells"}
    assert gen.uns["rnadiff"]["guidance"] == {"group_id": 2.0}
    # X is log1p of expression per 10,000 per cell (a counts model), and says so
    assert gen.uns["rnadiff"]["scale"] == 1e4


def test_generate_from_a_csv_of_conditions(model_dir, tmp_path):
    csv = tmp_path / "conds.csv"
    pd.DataFrame({"group_id": ["ctrl", "stim"], "cluster_id": ["B cells", "CD4 T cells"]}).to_csv(
        csv, index=False
    )
    out = tmp_path / "gen.h5ad"
    invoke(
        "generate",
        "--model",
        model_dir,
        "--conditions-csv",
        csv,
        "--n",
        "3",
        "--steps",
        "3",
        "--out",
        out,
        "--quiet",
    )
    gen = ad.read_h5ad(out)
    assert list(gen.obs["group_id"]) == ["ctrl"] * 3 + ["stim"] * 3


def test_predict_with_where_filters(model_dir, kang_file, tmp_path):
    out = tmp_path / "pred.h5ad"
    invoke(
        "predict",
        "--model",
        model_dir,
        "--source",
        kang_file,
        "--where",
        "group_id=ctrl",
        "--where",
        "cluster_id=B cells",
        "--perturbation",
        "stim",
        "--steps",
        "4",
        "--out",
        out,
        "--quiet",
    )
    pred = ad.read_h5ad(out)
    src = ad.read_h5ad(kang_file)
    expected = src.obs_names[(src.obs.group_id == "ctrl") & (src.obs.cluster_id == "B cells")]
    assert list(pred.obs_names) == list(expected)
    assert set(pred.obs["group_id"]) == {"stim"}


def test_predict_under_several_perturbations_into_one_file(model_dir, kang_file, tmp_path):
    base = ["predict", "--model", model_dir, "--source", kang_file, "--where", "group_id=ctrl"]
    base += ["--steps", "4", "--quiet"]
    invoke(*base, "--perturbation", "stim", "--out", tmp_path / "stim.h5ad")
    invoke(*base, "--perturbation", "all", "--out", tmp_path / "all.h5ad")  # all but ctrl
    invoke(
        *base, "--perturbation", "stim", "--perturbation", "ctrl", "--out", tmp_path / "two.h5ad"
    )
    single, every, two = (ad.read_h5ad(tmp_path / f) for f in ("stim.h5ad", "all.h5ad", "two.h5ad"))
    np.testing.assert_array_equal(every.X, single.X)  # the model's only perturbation: stim
    assert two.n_obs == 2 * single.n_obs and two.obs_names.is_unique
    assert list(two.obs_names[: single.n_obs]) == [f"{n}-stim" for n in single.obs_names]
    assert list(two.obs.group_id.astype(str)) == ["stim"] * single.n_obs + ["ctrl"] * single.n_obs
    # each part is the prediction under that perturbation alone (same seed)
    np.testing.assert_array_equal(two.X[: single.n_obs], single.X)
    info = two.uns["rnadiff"]
    assert set(info["predictions"]) == {"stim", "ctrl"} and info["method"] == "counterfactual"
    assert info["predictions"]["ctrl"]["target"]["group_id"] == "ctrl"
    for extra, message in (
        (["--perturbation", "all", "--perturbation", "stim"], "stands alone"),
        (["--perturbation", "stim", "--perturbation", "stim"], "given twice"),
    ):
        result = runner.invoke(app, [str(a) for a in [*base, *extra, "--out", tmp_path / "x.h5ad"]])
        assert result.exit_code != 0 and message in str(result.exception)


def test_predict_reports_cell_fate(model_dir, kang_file, tmp_path):
    """--state-key / --reference: the predicted cells classified into the reference's states
    (here the cell types), compositions per target and of the source cells, printed, stored,
    written and drawn."""
    import pandas as pd

    base = ["predict", "--model", model_dir, "--source", kang_file, "--where", "group_id=ctrl"]
    base += ["--steps", "4", "--quiet", "--state-key", "cluster_id", "--reference", kang_file]
    out, csv, png = tmp_path / "fate.h5ad", tmp_path / "fate.csv", tmp_path / "fate.png"
    text = invoke(
        *base, "--perturbation", "stim", "--perturbation", "ctrl", "--out", out,
        "--fate-csv", csv, "--fate-plot", png,
    )  # fmt: skip
    assert "cross-validated balanced accuracy" in text and "source" in text
    pred = ad.read_h5ad(out)
    states = set(ad.read_h5ad(kang_file).obs.cluster_id.astype(str))
    assert set(pred.obs["rnadiff_state"].astype(str)) <= states
    assert pred.obs["rnadiff_state_probability"].between(0, 1).all()
    assert set(pred.uns["rnadiff_fate"]["by_target"]) == {"stim", "ctrl", "source"}
    table = pd.read_csv(csv)
    assert list(table.columns) == ["target", "state", "proportion", "low", "high", "n_cells"]
    assert set(table.target) == {"stim", "ctrl", "source"}
    np.testing.assert_allclose(table.groupby("target").proportion.sum(), 1.0, atol=1e-6)
    n_source = int(table[table.target == "source"].n_cells.sum())
    assert int(table[table.target == "stim"].n_cells.sum()) == n_source == pred.n_obs // 2
    assert png.stat().st_size > 1000
    # a single target: its name is the target's
    invoke(*base, "--perturbation", "stim", "--out", tmp_path / "one.h5ad")
    assert set(ad.read_h5ad(tmp_path / "one.h5ad").uns["rnadiff_fate"]["by_target"]) == {
        "stim", "source",
    }  # fmt: skip
    for args, message in (
        (["--state-key", "cluster_id"], "needs --reference"),
        (["--fate-csv", csv], "need --state-key"),
        (["--state-key", "nope", "--reference", kang_file], "not a column"),
        (["--state-key", "cluster_id", "--reference", kang_file, "--fate-plot", csv], ".png"),
    ):
        cmd = ["predict", "--model", model_dir, "--source", kang_file, "--steps", "2"]
        cmd += ["--perturbation", "stim", "--out", tmp_path / "bad.h5ad", "--quiet", *args]
        result = runner.invoke(app, [str(a) for a in cmd])
        assert result.exit_code != 0 and message in str(result.exception), result.output
        assert not (tmp_path / "bad.h5ad").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--condition", "group_id=nonsense"], "unknown perturbation 'nonsense'"),
        (["--condition", "donor=1"], "unknown covariates ['donor']"),
        (["--condition", "group_id"], "KEY=VALUE"),
        (["--sampler", "ddim"], "unknown sampler 'ddim'"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(model_dir, tmp_path, args, message):
    cmd = [
        sys.executable,
        "-m",
        "rnadiff.cli",
        "generate",
        "--model",
        str(model_dir),
        "--out",
        str(tmp_path / "x.h5ad"),
        "--n",
        "2",
        "--quiet",
        *args,
    ]
    if "--condition" not in args:
        cmd += ["--condition", "group_id=stim"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x.h5ad").exists()


@pytest.mark.parametrize(
    "command", ["train", "generate", "predict", "denoise", "demo", "design", "rank"]
)
def test_help_explains_every_option(command):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    options = [line for line in result.output.splitlines() if line.strip("│ ").startswith("--")]
    assert options
    for line in options:
        # each option line carries a description after its type
        assert len(line.strip("│ ").split()) > 2, line


@pytest.mark.parametrize(
    "command", ["train", "generate", "predict", "denoise", "demo", "design", "rank", "evaluate"]
)
def test_help_description_is_reflowed_to_the_terminal(command):
    # the docstring's own line breaks would split sentences in the middle of a wide screen
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "2000"})
    assert result.exit_code == 0
    head = result.output.split("╭")[0]
    lines = [line.strip() for line in head.splitlines() if line.strip()]
    assert lines[0].startswith("Usage:")
    for line in lines[1:]:
        # a paragraph of the description is one line on a very wide screen: it ends a sentence
        assert line.endswith((".", ":", ")", "...")), line


def test_evaluate_scores_a_perfect_prediction_as_perfect(kang_file, tmp_path):
    from rnadiff.data._preprocessing import detect_input_type, log_normalized_matrix

    real = ad.read_h5ad(kang_file)
    stim = real[(real.obs.group_id == "stim").to_numpy()]
    perfect = ad.AnnData(
        X=log_normalized_matrix(stim.X, detect_input_type(stim.X), 1e4),
        obs=stim.obs.copy(),
        var=pd.DataFrame(index=stim.var_names),
    )
    pred_file = tmp_path / "perfect.h5ad"
    perfect.write_h5ad(pred_file)
    out = tmp_path / "metrics.csv"
    text = invoke(
        "evaluate",
        "--pred",
        pred_file,
        "--real",
        kang_file,
        "--real-where",
        "group_id=stim",
        "--control-where",
        "group_id=ctrl",
        "--out",
        out,
    )
    assert "predicted vs" in text
    metrics = pd.read_csv(out, index_col="metric")["value"]
    assert metrics["r2_mean_all"] == pytest.approx(1.0)
    assert metrics["pearson_delta_top100"] == pytest.approx(1.0)
    assert metrics["de_overlap_top20"] == pytest.approx(1.0)
    from rnadiff.evaluation._score import score

    ctrl = real[(real.obs.group_id == "ctrl").to_numpy()]
    unchanged = score(ctrl, stim, ctrl)  # "no change" is far from the real stimulated cells
    # identical populations: -2 m / n (m: mean distance, n cells), small next to a real change
    assert abs(metrics["edistance"]) < 0.15 * unchanged["edistance"]
    assert metrics["knn_auc"] < unchanged["knn_auc"]


def test_evaluate_by_condition_scores_each_and_discriminates(kang_file, tmp_path):
    from rnadiff.data._preprocessing import detect_input_type, log_normalized_matrix

    real = ad.read_h5ad(kang_file)
    stim = real[(real.obs.group_id == "stim").to_numpy()]
    perfect = ad.AnnData(
        X=log_normalized_matrix(stim.X, detect_input_type(stim.X), 1e4),
        obs=stim.obs[["cluster_id"]].copy(),
        var=pd.DataFrame(index=stim.var_names),
    )
    pred_file = tmp_path / "perfect.h5ad"
    perfect.write_h5ad(pred_file)
    out = tmp_path / "by_condition.csv"
    args = ["evaluate", "--pred", pred_file, "--real", kang_file, "--by", "cluster_id"]
    args += ["--real-where", "group_id=stim", "--control-where", "group_id=ctrl", "--out", out]
    text = invoke(*args, "--plot", tmp_path / "by_condition.png")
    assert (tmp_path / "by_condition.png").stat().st_size > 0
    assert "predicted conditions of 'cluster_id'" in text and "mean over conditions" in text
    table = pd.read_csv(out, index_col="cluster_id")
    assert sorted(table.index) == sorted(set(stim.obs.cluster_id.astype(str)))
    assert (table.n_pred == table.n_real).all()
    assert np.allclose(table.r2_mean_all, 1.0)
    assert (table.discrimination_all_genes == 1.0).all()
    # --control-label belongs to --by
    result = runner.invoke(app, [str(a) for a in [*args[:5], "--control-label", "ctrl"]])
    assert result.exit_code != 0 and "--control-label needs --by" in str(result.exception)
    result = runner.invoke(app, [str(a) for a in [*args[:5], "--plot", tmp_path / "x.png"]])
    assert result.exit_code != 0 and "--plot needs --by" in str(result.exception)


def test_evaluate_tells_when_genes_do_not_match(kang_file, tmp_path):
    rng = np.random.default_rng(0)
    pred = ad.AnnData(
        X=rng.random((5, 10), dtype=np.float32),
        var=pd.DataFrame(index=[f"NOTAGENE{i}" for i in range(10)]),
    )
    pred_file = tmp_path / "bad.h5ad"
    pred.write_h5ad(pred_file)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rnadiff.cli",
            "evaluate",
            "--pred",
            str(pred_file),
            "--real",
            str(kang_file),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "genes do not match" in proc.stderr and "NOTAGENE" in proc.stderr
    assert "Traceback" not in proc.stderr


def _some_genes(model_dir, n=2):
    return RNADiffusion.load(model_dir).genes[:n]


def test_design_writes_cells_a_summary_and_a_plot(model_dir, kang_file, tmp_path):
    genes = _some_genes(model_dir)
    out, png = tmp_path / "designed.h5ad", tmp_path / "design.png"
    text = invoke(
        "design",
        "--model",
        model_dir,
        "--out",
        out,
        "--up",
        ",".join(genes),
        "--condition",
        "cluster_id=B cells",
        "--n",
        "30",
        "--reference",
        kang_file,
        "--reference-where",
        "group_id=ctrl",
        "--realism-reference",
        kang_file,
        "--plot",
        png,
        "--quiet",
    )
    assert "meet it:" in text and "realism, median" in text
    designed = ad.read_h5ad(out)
    assert designed.n_obs == 30 and {"meets_spec", "realism"} <= set(designed.obs)
    assert png.stat().st_size > 1000


def test_rank_prints_a_table_and_writes_csv_and_plot(model_dir, kang_file, tmp_path):
    csv, png = tmp_path / "rank.csv", tmp_path / "rank.png"
    text = invoke(
        "rank",
        "--model",
        model_dir,
        "--target",
        kang_file,
        "--target-where",
        "group_id=stim",
        "--n",
        "10",
        "--out",
        csv,
        "--plot",
        png,
        "--quiet",
    )
    assert "ranked 2 candidates" in text
    table = pd.read_csv(csv)
    assert sorted(table["perturbation"]) == ["ctrl", "stim"] and table["rank"].tolist() == [1, 2]
    assert png.stat().st_size > 1000
    genes = _some_genes(model_dir, 1)
    text = invoke("rank", "--model", model_dir, "--down", genes[0], "--n", "10", "--quiet")
    assert "success_rate" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["design", "--up", "NOT_A_GENE"], "not among the model's"),
        (["design"], "give marker genes"),
        (["rank"], "give either --target cells or marker genes"),
        (["rank", "--up", "X", "--candidates", "aspirin"], "aspirin"),
    ],
)
def test_design_and_rank_errors_are_one_line(model_dir, tmp_path, args, message):
    cmd = [sys.executable, "-m", "rnadiff.cli", args[0], "--model", str(model_dir), "--quiet"]
    if args[0] == "design":
        cmd += ["--out", str(tmp_path / "x.h5ad"), "--n", "2"]
    if args[-1] == "aspirin":
        gene = _some_genes(model_dir, 1)[0]
        args = [args[0], "--up", gene, *args[3:]]
    proc = subprocess.run(cmd + args[1:], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_effect_calibration_options(model_dir, kang_file, tmp_path):
    scales = RNADiffusion.load(model_dir).effect_scales
    assert set(scales) == {"stim"}  # calibrated at the end of training, kept in the model
    args = ["generate", "--model", model_dir, "--condition", "group_id=stim", "--n", "3"]
    args += ["--steps", "3", "--quiet"]
    invoke(*args, "--out", tmp_path / "a.h5ad")
    invoke(*args, "--no-calibration", "--out", tmp_path / "b.h5ad")
    used = ad.read_h5ad(tmp_path / "a.h5ad").uns["rnadiff"]["effect_scales"]
    assert dict(used) == ({} if scales["stim"] == 1 else scales)
    assert not dict(ad.read_h5ad(tmp_path / "b.h5ad").uns["rnadiff"]["effect_scales"])
    out = tmp_path / "uncalibrated"
    invoke(
        "train", "--data", kang_file, "--out", out, "--perturbation-key", "group_id",
        "--control", "ctrl", "--max-steps", "3", "--calibration-cells", "0", *TINY,
    )  # fmt: skip
    assert RNADiffusion.load(out).effect_scales == {}


def test_train_length_options(kang_file, tmp_path):
    base = ["train", "--data", kang_file, "--perturbation-key", "group_id", "--control", "ctrl"]
    base += ["--calibration-cells", "0", *TINY]  # batches of 32 cells, 200 cells
    # --epochs: passes over the cells, here ceil(1.5 * 200 / 32) = 10 steps (above --min-steps)
    invoke(*base, "--out", tmp_path / "a", "--epochs", "1.5", "--min-steps", "3")
    model = RNADiffusion.load(tmp_path / "a")
    assert model.step == 10
    assert model.train_config.epochs == 1.5 and model.train_config.min_steps == 3
    # --min-steps lifts a short run; --max-steps caps a long one
    invoke(*base, "--out", tmp_path / "b", "--epochs", "0.5", "--min-steps", "6")
    assert RNADiffusion.load(tmp_path / "b").step == 6
    invoke(*base, "--out", tmp_path / "c", "--epochs", "5", "--min-steps", "2", "--max-steps", "7")
    assert RNADiffusion.load(tmp_path / "c").step == 7
    # --max-steps alone: exactly that many
    invoke(*base, "--out", tmp_path / "d", "--max-steps", "4")
    assert RNADiffusion.load(tmp_path / "d").train_config.epochs is None
    bad = runner.invoke(app, [str(a) for a in [*base, "--out", tmp_path / "e", "--epochs", "0"]])
    assert bad.exit_code != 0 and "epochs must be positive" in str(bad.exception)
    assert not (tmp_path / "e" / "config.json").exists()


def test_train_min_epochs_option(kang_file, tmp_path):
    base = ["train", "--data", kang_file, "--perturbation-key", "group_id", "--control", "ctrl"]
    base += ["--calibration-cells", "0", *TINY]
    assert "--min-epochs" in runner.invoke(app, ["train", "--help"], terminal_width=200).output
    # stored with the model; a --max-steps given stays a hard cap
    invoke(*base, "--out", tmp_path / "a", "--max-steps", "3", "--min-epochs", "5")
    model = RNADiffusion.load(tmp_path / "a")
    assert model.step == 3 and model.train_config.min_epochs == 5
    # 0: no floor; a resumed run takes a new floor, and keeps the rest of its settings
    invoke(*base, "--out", tmp_path / "a", "--max-steps", "5", "--resume", "--min-epochs", "0")
    model = RNADiffusion.load(tmp_path / "a")
    assert model.step == 5 and model.train_config.min_epochs is None
    assert model.train_config.batch_size == 32
    # not given: the default floor of 2 passes
    invoke(*base, "--out", tmp_path / "b", "--max-steps", "2")
    assert RNADiffusion.load(tmp_path / "b").train_config.min_epochs == 2.0
    bad = [*base, "--out", tmp_path / "c", "--min-epochs", "-1"]
    bad = runner.invoke(app, [str(a) for a in bad])
    assert bad.exit_code != 0 and "--min-epochs must be >= 0" in str(bad.exception)
    assert not (tmp_path / "c" / "config.json").exists()
    bad = runner.invoke(
        app, [str(a) for a in [*base, "--out", tmp_path / "f", "--batch-size", "0"]]
    )
    assert bad.exit_code != 0 and "--batch-size must be at least 1" in str(bad.exception)
    assert not (tmp_path / "f").exists()
    bad = runner.invoke(
        app, [str(a) for a in [*base, "--out", tmp_path / "g", "--precision", "fp16"]]
    )
    assert bad.exit_code != 0 and "--precision must be auto, fp32 or bf16" in str(bad.exception)
    assert not (tmp_path / "g").exists()


def test_denoise_writes_denoised_cells_with_their_obs(model_dir, kang_file, tmp_path):
    out = tmp_path / "denoised.h5ad"
    text = invoke(
        "denoise",
        "--model",
        model_dir,
        "--data",
        kang_file,
        "--out",
        out,
        "--sigma",
        "0.5",
        "--where",
        "group_id=ctrl",
        "--quiet",
    )
    cells = ad.read_h5ad(out)
    real = ad.read_h5ad(kang_file)
    ctrl = real[(real.obs.group_id == "ctrl").to_numpy()]
    assert "wrote" in text and cells.n_obs == ctrl.n_obs
    assert list(cells.obs_names) == list(ctrl.obs_names)
    assert (cells.obs["cluster_id"].astype(str) == ctrl.obs["cluster_id"].astype(str)).all()
    # the input cells as they were, the denoised values of every gene in a layer
    assert (cells.X != ctrl.X).nnz == 0 and list(cells.var_names) == list(real.var_names)
    assert cells.uns["rnadiff_denoised"]["method"] == "denoise"
    assert cells.uns["rnadiff_denoised"]["sigma"] == 0.5
    denoised = cells.layers["rnadiff_denoised"]
    assert np.isfinite(denoised).all() and (denoised >= 0).all()


def test_denoise_rejects_a_bad_sigma_in_one_line(model_dir, kang_file, tmp_path):
    cmd = [sys.executable, "-m", "rnadiff.cli", "denoise", "--model", str(model_dir)]
    cmd += ["--data", str(kang_file), "--out", str(tmp_path / "x.h5ad"), "--sigma", "-1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "sigma must be a positive number" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x.h5ad").exists()


def test_denoise_sets_each_cells_sigma_from_its_depth_by_default(model_dir, kang_file, tmp_path):
    out = tmp_path / "auto.h5ad"
    invoke("denoise", "--model", model_dir, "--data", kang_file, "--out", out, "--quiet")
    cells = ad.read_h5ad(out)
    assert cells.uns["rnadiff_denoised"]["sigma"] == "auto"
    depth = np.asarray(ad.read_h5ad(kang_file).X.sum(axis=1)).ravel()
    sigma = cells.obs["rnadiff_denoised_sigma"].to_numpy()
    assert (sigma > 0).all()
    assert np.corrcoef(np.log(depth), sigma)[0, 1] < 0  # shallower cells: larger levels
    cmd = [sys.executable, "-m", "rnadiff.cli", "denoise", "--model", str(model_dir)]
    cmd += ["--data", str(kang_file), "--out", str(tmp_path / "x.h5ad"), "--sigma", "strong"]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "--sigma must be a positive number or 'auto'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_train_with_count_thinning(kang_file, tmp_path):
    out = tmp_path / "thin_model"
    args = ["--perturbation-key", "group_id", "--control", "ctrl", "--max-steps", "4"]
    invoke("train", "--data", kang_file, "--out", out, *args, "--thinning", "0.5", *TINY)
    config = json.loads((out / "config.json").read_text())
    assert config["train_config"]["thinning"] == 0.5


def test_spread_calibration_options(model_dir, kang_file, tmp_path):
    scale = RNADiffusion.load(model_dir).spread_scale  # calibrated at the end of training
    assert scale != 1.0
    args = ["predict", "--model", model_dir, "--source", kang_file, "--where", "group_id=ctrl"]
    args += ["--perturbation", "stim", "--steps", "3", "--quiet"]
    invoke(*args, "--out", tmp_path / "a.h5ad")
    invoke(*args, "--no-spread", "--out", tmp_path / "b.h5ad")
    wide, plain = ad.read_h5ad(tmp_path / "a.h5ad"), ad.read_h5ad(tmp_path / "b.h5ad")
    modelled = wide.var["rnadiff_modelled"].to_numpy()  # passed-through genes are not widened
    wide, plain = wide[:, modelled], plain[:, modelled]
    assert wide.uns["rnadiff"]["spread_scale"] == scale
    assert plain.uns["rnadiff"]["spread_scale"] == 1.0
    for t in sorted(set(wide.obs.cluster_id)):  # each target cell type around its own mean
        rows = (wide.obs.cluster_id == t).to_numpy()
        expected = widen(plain.X[rows], np.zeros(rows.sum()), scale)
        np.testing.assert_allclose(wide.X[rows], expected, rtol=1e-5, atol=1e-6)
    out = tmp_path / "unspread"
    invoke(
        "train", "--data", kang_file, "--out", out, "--perturbation-key", "group_id",
        "--control", "ctrl", "--max-steps", "3", "--spread-cells", "0", *TINY,
    )  # fmt: skip
    assert RNADiffusion.load(out).spread_scale == 1.0


def test_mean_anchoring_options(model_dir, kang_file, tmp_path):
    """Training anchors the measured conditions (here every cell type's stimulated cells);
    --no-anchor predicts the network's own means; --anchor-cells 0 trains without anchors."""
    assert RNADiffusion.load(model_dir).anchors is not None
    args = ["predict", "--model", model_dir, "--source", kang_file, "--where", "group_id=ctrl"]
    args += ["--perturbation", "stim", "--steps", "3", "--quiet", "--no-spread"]
    invoke(*args, "--out", tmp_path / "a.h5ad")
    invoke(*args, "--no-anchor", "--out", tmp_path / "b.h5ad")
    on, off = ad.read_h5ad(tmp_path / "a.h5ad"), ad.read_h5ad(tmp_path / "b.h5ad")
    assert on.uns["rnadiff"]["anchored_cells"] == on.n_obs
    assert off.uns["rnadiff"]["anchored_cells"] == 0
    assert not np.allclose(on.X, off.X)
    out = tmp_path / "unanchored"
    invoke("train", "--data", kang_file, "--out", out, "--perturbation-key", "group_id",
           "--control", "ctrl", "--max-steps", "3", "--anchor-cells", "0", *TINY)  # fmt: skip
    assert RNADiffusion.load(out).anchors is None


def test_api_messages_are_put_in_the_command_lines_words():
    from rnadiff.cli._common import cli_words

    assert cli_words("state the base with input='log2'") == "state the base with --input log2"
    assert cli_words("counts=True needs a model trained on raw counts").startswith("--counts ")
    assert cli_words("anchor=False: the network's own") == "--no-anchor: the network's own"
    assert cli_words("n_models must be at least 1") == "--n-models must be at least 1"
    hint = cli_words("once the model has its SMILES (model.add_molecules({name: smiles}))")
    assert "--smiles FILE" in hint and "add_molecules" not in hint
    assert cli_words("axis=0 is kept") == "axis=0 is kept"  # not an option: as it is
