"""torchrun with 2 CPU processes trains one model: one checkpoint, written once, equal (up to
the order of float sums) to a single process with the same global batch and seed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rnadiff import RNADiffusion

TORCHRUN = Path(sys.executable).with_name("torchrun")
ARGS = ["--perturbation-key", "group_id", "--control", "ctrl", "--cell-type-key", "cluster_id"]
ARGS += ["--width", "32", "--depth", "1", "--n-top-genes", "80", "--max-steps", "24"]
ARGS += ["--batch-size", "64", "--calibration-cells", "16", "--spread-cells", "16"]
ARGS += ["--threads", "1", "--quiet", "--device", "cpu"]


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed beside python")
def test_two_processes_train_the_single_process_model(tmp_path, _kang_small_session):
    data = tmp_path / "cells.h5ad"
    _kang_small_session.write_h5ad(data)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    one = [sys.executable, "-m", "rnadiff.cli", "train", "--data", str(data), "--out", str(single)]
    proc = subprocess.run([*one, *ARGS], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "rnadiff.cli", "train"]
    two += ["--data", str(data), "--out", str(ddp)]
    proc = subprocess.run([*two, *ARGS], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # one checkpoint, written by rank 0 only: the same files as the single process's
    assert sorted(p.name for p in ddp.iterdir()) == sorted(p.name for p in single.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.h5ad", "ddp", "single"]
    meta = json.loads((ddp / "config.json").read_text())
    assert meta["distributed"] == {"world_size": 2, "global_batch": 64}
    a, b = RNADiffusion.load(single), RNADiffusion.load(ddp)
    for x, y in ((a.denoiser, b.denoiser), (a.ema, b.ema)):
        for (k, v), (_, w) in zip(x.state_dict().items(), y.state_dict().items(), strict=True):
            torch.testing.assert_close(w, v, rtol=1e-4, atol=1e-5, msg=k)
    losses = [np.array([h["loss"] for h in m.history]) for m in (a, b)]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)
    assert b.effect_scales.keys() == a.effect_scales.keys()
    shutil.rmtree(tmp_path / "single")
