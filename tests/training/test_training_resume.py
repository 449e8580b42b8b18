"""Resuming training through the user API on real cells (Kang et al. 2018, IFN-beta PBMCs).

An interrupted run continued from its checkpoint must end with exactly the weights of the
uninterrupted run: every random draw of a step is seeded by (seed, step), and the optimizer state,
the EMA and the step counter travel in the checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch

from rnadiff import ModelConfig, NetworkConfig, PreprocessConfig, RNADiffusion, TrainConfig

_ENV = os.environ.get("RNADIFF_DATA_DIR")
DATA_DIR = Path(_ENV) if _ENV else Path(__file__).resolve().parents[3] / "shared" / "data"
KANG = DATA_DIR / "kang2018_ifnb_pbmc_counts.h5ad"

CONFIG = ModelConfig(
    preprocess=PreprocessConfig(n_top_genes=100),
    network=NetworkConfig(width=32, depth=1, emb_dim=16),
)
STEPS = 16

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def adata() -> ad.AnnData:
    if not KANG.is_file():
        pytest.skip(f"real data not found at {KANG} (set RNADIFF_DATA_DIR)")
    full = ad.read_h5ad(KANG)
    rows = np.random.default_rng(0).choice(full.n_obs, size=200, replace=False)
    cells = full[np.sort(rows)].copy()
    RNADiffusion.setup_anndata(
        cells, perturbation_key="group_id", control="ctrl", cell_type_key="cluster_id"
    )
    return cells


def _new_model(adata) -> RNADiffusion:
    torch.manual_seed(0)  # the same initial weights for every run
    return RNADiffusion(adata, config=CONFIG)


def _assert_same_weights(a: RNADiffusion, b: RNADiffusion) -> None:
    for net_a, net_b in ((a.denoiser, b.denoiser), (a.ema, b.ema)):
        sa, sb = net_a.state_dict(), net_b.state_dict()
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.equal(sa[key], sb[key]), key


class _Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def straight(adata) -> RNADiffusion:
    return _new_model(adata).train(max_steps=STEPS, batch_size=32, progress=False)


def test_training_runs_and_changes_the_weights(adata, straight):
    fresh = _new_model(adata)
    assert straight.step == STEPS
    assert straight.history and np.isfinite(straight.history[-1]["loss"])
    assert not torch.equal(
        straight.denoiser.net.proj_out.weight, fresh.denoiser.net.proj_out.weight
    )


def test_interrupted_run_resumed_from_checkpoint_equals_straight_run(adata, straight, tmp_path):
    ckpt = tmp_path / "ckpt"
    model = _new_model(adata)
    save = model.save

    def save_then_crash(path):  # the process dies right after the checkpoint of step STEPS/2
        save(path)
        if model.step == STEPS // 2:
            raise _Interrupted

    model.save = save_then_crash
    with pytest.raises(_Interrupted):
        model.train(
            max_steps=STEPS,
            batch_size=32,
            checkpoint_dir=ckpt,
            checkpoint_every=STEPS // 2,
            progress=False,
        )

    resumed = RNADiffusion.load(ckpt, adata=adata)
    assert resumed.step == STEPS // 2
    assert resumed.train_config.max_steps == STEPS
    resumed.train(progress=False)  # continues with the stored training configuration

    assert resumed.step == STEPS
    _assert_same_weights(resumed, straight)


def test_extending_a_finished_run_equals_one_longer_run(adata, tmp_path):
    # A cosine schedule depends on max_steps, so extending a finished run can equal a longer run
    # only with a constant learning rate; everything else (optimizer moments, EMA, random
    # streams, step counter) must continue exactly.
    constant = TrainConfig(warmup_steps=0, lr_min_ratio=1.0, lr=2e-3, batch_size=32)
    longer = _new_model(adata).train(max_steps=STEPS, config=constant, progress=False)

    ckpt = tmp_path / "ckpt"
    _new_model(adata).train(
        max_steps=STEPS // 2, config=constant, checkpoint_dir=ckpt, progress=False
    )
    assert (ckpt / "config.json").is_file()
    resumed = RNADiffusion.load(ckpt, adata=adata).train(max_steps=STEPS, progress=False)

    assert resumed.step == STEPS
    _assert_same_weights(resumed, longer)


def test_resuming_without_the_optimizer_moments_is_detectably_different(adata, tmp_path):
    # Guard: the same checkpoint stripped of its Adam moments (step counter and history kept)
    # does not reproduce the run, so the equality above depends on the stored optimizer state.
    constant = TrainConfig(warmup_steps=0, lr_min_ratio=1.0, lr=2e-3, batch_size=32)
    longer = _new_model(adata).train(max_steps=STEPS, config=constant, progress=False)
    ckpt = tmp_path / "ckpt"
    _new_model(adata).train(
        max_steps=STEPS // 2, config=constant, checkpoint_dir=ckpt, progress=False
    )
    resumed = RNADiffusion.load(ckpt, adata=adata)
    meta, _ = resumed._trainer_state
    resumed._trainer_state = (meta, {})
    resumed.train(max_steps=STEPS, progress=False)
    assert resumed.step == STEPS
    assert not torch.equal(longer.ema.net.proj_out.weight, resumed.ema.net.proj_out.weight)


def test_resume_is_exact_with_count_thinning_too(adata, tmp_path):
    # the thinning draws come from the step's generator, so a resumed run repeats them
    thin = TrainConfig(warmup_steps=0, lr_min_ratio=1.0, batch_size=32, thinning=0.5)
    longer = _new_model(adata).train(max_steps=STEPS, config=thin, progress=False)
    plain = _new_model(adata).train(
        max_steps=STEPS, config=TrainConfig(**{**thin.to_dict(), "thinning": 0.0}), progress=False
    )
    assert not torch.equal(longer.ema.net.proj_out.weight, plain.ema.net.proj_out.weight)
    ckpt = tmp_path / "ckpt"
    _new_model(adata).train(max_steps=STEPS // 2, config=thin, checkpoint_dir=ckpt, progress=False)
    resumed = RNADiffusion.load(ckpt, adata=adata)
    assert resumed.train_config.thinning == 0.5
    resumed.train(max_steps=STEPS, progress=False)
    _assert_same_weights(resumed, longer)
