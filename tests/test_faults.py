"""Faults: a training run killed with SIGKILL resumes to exactly the uninterrupted model; a full
disk while writing a checkpoint or an .h5ad keeps the previous file; a folder of the user's is
never replaced."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch

import rnadiff.training._checkpoint as checkpoint_module
from rnadiff import RNADiffusion
from rnadiff.cli import main

SETUP = ["--perturbation-key", "group_id", "--control", "ctrl", "--cell-type-key", "cluster_id"]
# a small network; the length is the default (a fixed number of passes over these cells)
NET = ["--width", "16", "--depth", "1", "--n-top-genes", "60", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory, _kang_small_session) -> Path:
    path = tmp_path_factory.mktemp("faults") / "cells.h5ad"
    _kang_small_session.write_h5ad(path)
    return path


def _cli(*args) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "rnadiff.cli", *[str(a) for a in args]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _run_main(monkeypatch, capsys, *args) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["rnadiff", *[str(a) for a in args]])
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _same_model(a: RNADiffusion, b: RNADiffusion) -> None:
    for x, y in ((a.denoiser, b.denoiser), (a.ema, b.ema)):
        for (k, v), (_, w) in zip(x.state_dict().items(), y.state_dict().items(), strict=True):
            assert torch.equal(v, w), k
    assert a.step == b.step and a.history == b.history
    assert a.effect_scales == b.effect_scales and a.spread_scale == b.spread_scale


def test_a_killed_default_run_resumes_to_the_uninterrupted_model(data, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    proc = _cli("train", "--data", data, "--out", straight, *SETUP, *NET)
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()
    proc = _cli("train", "--data", data, "--out", killed, *SETUP, *NET)
    deadline = time.monotonic() + 300
    while not (killed / "manifest.json").exists():  # the first of the run's checkpoints
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    interrupted = RNADiffusion.load(killed)
    final = RNADiffusion.load(straight)
    assert 0 < interrupted.step < final.step, "killed after the end: nothing to resume"
    proc = _cli("train", "--data", data, "--out", killed, "--resume", "--quiet", "--threads", "1")
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()
    _same_model(RNADiffusion.load(killed), final)


def test_resume_refuses_other_data(data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "model"
    args = ["train", "--data", data, "--out", out, *SETUP, *NET, "--max-steps", "3"]
    assert _run_main(monkeypatch, capsys, *args)[0] == 0
    other = ad.read_h5ad(data)[::2].copy()
    other.write_h5ad(tmp_path / "other.h5ad")
    code, err = _run_main(
        monkeypatch, capsys, "train", "--data", tmp_path / "other.h5ad", "--out", out, "--resume"
    )
    assert code == 2 and "not the data the model was trained on" in err
    assert RNADiffusion.load(out).step == 3


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(
    data, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "model"
    args = ["train", "--data", data, "--out", out, *SETUP, *NET, "--max-steps", "4"]
    assert _run_main(monkeypatch, capsys, *args, "--calibration-cells", "0")[0] == 0
    before = {p.name: _sha(p) for p in out.iterdir()}
    real = checkpoint_module.save_file

    def full(tensors, filename, *a, **k):
        Path(filename).write_bytes(b"partial")  # some bytes made it before the disk filled
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module, "save_file", full)
    code, err = _run_main(
        monkeypatch, capsys, "train", "--data", data, "--out", out, "--resume", "--max-steps", "8"
    )
    monkeypatch.setattr(checkpoint_module, "save_file", real)
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "disk full" in lines[0]
    assert "the previous checkpoint is intact" in lines[0] and "Traceback" not in err
    assert {p.name: _sha(p) for p in out.iterdir()} == before
    assert RNADiffusion.load(out).step == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folders


def test_a_full_disk_while_writing_an_h5ad_keeps_the_previous_file(
    data, tmp_path, monkeypatch, capsys
):
    model = tmp_path / "model"
    args = ["train", "--data", data, "--out", model, *SETUP, *NET, "--max-steps", "2"]
    assert _run_main(monkeypatch, capsys, *args)[0] == 0
    out = tmp_path / "cells.h5ad"
    gen = ["generate", "--model", model, "--condition", "group_id=stim", "--n", "5", "--quiet"]
    assert _run_main(monkeypatch, capsys, *gen, "--out", out)[0] == 0
    before = _sha(out)
    real = ad.AnnData.write_h5ad

    def full(self, filename, *a, **k):
        Path(filename).write_bytes(b"\x89HDF partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ad.AnnData, "write_h5ad", full)
    code, err = _run_main(monkeypatch, capsys, *gen, "--seed", "1", "--out", out)
    monkeypatch.setattr(ad.AnnData, "write_h5ad", real)
    assert code == 2 and "disk full" in err and "the previous file is intact" in err
    assert _sha(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.h5ad", "model"]
    assert np.isfinite(ad.read_h5ad(out).X).all()


def test_out_into_a_folder_holding_a_user_file_keeps_it(data, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "analysis"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    args = ["train", "--data", data, "--out", folder, *SETUP, *NET, "--max-steps", "2"]
    code, err = _run_main(monkeypatch, capsys, *args)
    assert code == 2 and "not an rnadiff model" in err
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert (folder / "notes.txt").read_text() == "my notes"
