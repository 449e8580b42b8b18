"""The training loop under an initialized process group (what torchrun sets up)."""

import pytest
import torch
import torch.distributed as dist

from rnadiff._config import DiffusionConfig, NetworkConfig, TrainConfig
from rnadiff.networks import Denoiser
from rnadiff.training import Trainer


def _trained(n_steps: int, n_models: int = 1) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = Denoiser(
        6,
        categorical={"pert": 3},
        continuous=["dose"],
        config=NetworkConfig(width=16, depth=1, emb_dim=8, n_models=n_models),
        sigma_data=1.0,
    )
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 6, generator=g)
    cond = {
        "pert": torch.eye(3)[torch.randint(0, 3, (32,), generator=g)],
        "dose": torch.rand(32, generator=g),
    }
    trainer = Trainer(
        net,
        config=TrainConfig(max_steps=n_steps, batch_size=8, warmup_steps=1),
        diffusion=DiffusionConfig(),
        p_drop=0.3,
    )
    trainer.fit(x, cond, progress=False)
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("n_models", [1, 2])
def test_single_process_group_trains_like_plain_training(tmp_path, n_models):
    plain = _trained(5, n_models)
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        assert dist.is_initialized()
        # wrapped in DistributedDataParallel: every parameter must get grads
        ddp = _trained(5, n_models)
    finally:
        dist.destroy_process_group()
    moved = _trained(1, n_models)  # training moves the weights
    assert any(not torch.equal(plain[k], v) for k, v in moved.items())
    for key in plain:
        torch.testing.assert_close(ddp[key], plain[key])
