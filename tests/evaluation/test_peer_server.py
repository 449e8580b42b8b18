"""Peer servers of the benchmark: one runner process answers many tasks, each like a fresh run."""

import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import _peers as bench  # noqa: E402

# a runner whose prediction is drawn from the global numpy state that _contract seeds, so a
# task that reused an earlier task's state would give different values
RUNNER = f"""
import os, sys
sys.path.insert(0, {str(ROOT / "benchmarks" / "peers")!r})
import _contract
import numpy as np

def run(task):
    if task.args.target == "crash":
        os._exit(3)
    x = np.asarray(task.source.X, dtype=np.float32) + np.random.rand()
    return _contract.Prediction(X=x, version="fake 1", train_s=1.0, predict_s=2.0, epochs=1,
                                notes="")

if __name__ == "__main__":
    _contract.main("fake", run)
"""


@pytest.fixture
def runner_files(tmp_path):
    rng = np.random.default_rng(0)
    counts = rng.poisson(2.0, size=(12, 5)).astype(np.float32)
    obs = pd.DataFrame(
        {"condition": ["ctrl"] * 6 + ["stim"] * 4 + ["crash"] * 2, "cell_type": ["A"] * 12},
        index=[f"c{i}" for i in range(12)],
    )
    train = ad.AnnData(X=np.log1p(counts), obs=obs, layers={"counts": counts})
    train.var_names = [f"g{i}" for i in range(5)]
    train.write_h5ad(tmp_path / "train.h5ad")
    train[:6].copy().write_h5ad(tmp_path / "source.h5ad")
    script = tmp_path / "run_fake.py"
    script.write_text(RUNNER)
    return tmp_path, script


def _argv(folder: Path, out: str, *, seed: int, target: str = "stim") -> list[str]:
    return [
        "--train",
        str(folder / "train.h5ad"),
        "--source",
        str(folder / "source.h5ad"),
        "--out",
        str(folder / out),
        "--perturbation-key",
        "condition",
        "--control",
        "ctrl",
        "--target",
        target,
        "--cell-type-key",
        "cell_type",
        "--seed",
        str(seed),
    ]


def test_server_answers_each_task_as_a_fresh_process(runner_files):
    import subprocess

    folder, script = runner_files
    server = bench.PeerServer(Path(sys.executable), script)
    server.request(_argv(folder, "s1.h5ad", seed=1))
    server.request(_argv(folder, "s0.h5ad", seed=0))  # after another task in the same process
    cold = subprocess.run(
        [sys.executable, str(script), *_argv(folder, "cold.h5ad", seed=0)],
        capture_output=True,
        text=True,
    )
    assert cold.returncode == 0, cold.stderr
    warm, fresh, other = (ad.read_h5ad(folder / f) for f in ("s0.h5ad", "cold.h5ad", "s1.h5ad"))
    np.testing.assert_array_equal(warm.X, fresh.X)
    assert not np.array_equal(warm.X, other.X)  # the seed matters, so the check can fail
    assert warm.uns["peer"]["train_s"] == 1.0
    assert server.proc.poll() is None  # still serving
    server.proc.stdin.close()
    assert server.proc.wait(timeout=30) == 0  # ends when its input ends


def test_failed_task_reports_the_reason_and_the_server_goes_on(runner_files):
    folder, script = runner_files
    server = bench.PeerServer(Path(sys.executable), script)
    with pytest.raises(RuntimeError, match="'nope' is not a value"):
        server.request(_argv(folder, "bad.h5ad", seed=0, target="nope"))
    server.request(_argv(folder, "good.h5ad", seed=0))
    assert (folder / "good.h5ad").is_file()
    with pytest.raises(RuntimeError, match=r"peer process exited \(3\)"):
        server.request(_argv(folder, "crash.h5ad", seed=0, target="crash"))


def test_gears_does_not_apply_to_a_target_that_is_no_gene(kang_small):
    from rnadiff.data import _splits as splits

    split = next(iter(splits.kang_loo_celltype(kang_small)))
    assert "not genes of the data" in bench.not_applicable("gears", split)
    assert bench.not_applicable("scgen", split) is None
    assert bench.peer_label("scvi") == "scvi (latent arithmetic)"


def test_summary_rows_carry_each_methods_version_budget_and_convergence():
    import _reports as reports

    from rnadiff.evaluation._benchmark import summarize

    rows = pd.DataFrame(
        [
            {"task": "t", "fold": f, "seed": 0, "evaluation": "e", "method": m, "metric": "x"}
            | {"value": v}
            for f, (m, v) in enumerate([("cellflow", 1.0), ("cellflow", 2.0), ("rnadiff", 3.0)])
        ]
    )
    times = pd.DataFrame(
        [
            {"method": "cellflow", "task": "t", "train_s": 10.0, "predict_s": 1.0}
            | {"version": "cellflow-tools 0.0.9", "budget": "quick", "converged": True},
            {"method": "cellflow", "task": "t", "train_s": 20.0, "predict_s": 3.0}
            | {"version": "cellflow-tools 0.0.9", "budget": "quick", "converged": False},
            {"method": "gears", "task": "t", "note": "not run: no genes"},
            {"method": "rnadiff", "task": "t", "train_s": 5.0, "predict_s": 1.0},
        ]
    )
    out = reports.with_method_info(summarize(rows), times).set_index("method")
    cf = out.loc["cellflow"]
    assert (cf.version, cf.budget, cf.converged) == ("cellflow-tools 0.0.9", "quick", "1/2")
    assert (cf.train_s, cf.predict_s, cf["mean"]) == (15.0, 2.0, 1.5)
    gears = out.loc["gears"]
    assert gears.metric == "not run" and gears.n == 0 and "no genes" in gears.note
    assert out.loc["rnadiff"].converged == ""
