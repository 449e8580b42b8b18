"""Does ``torch.compile`` speed up the training step on a CPU? (issue 25, "optional
torch.compile")

    OMP_NUM_THREADS=T .venv/bin/python benchmarks/scale/compile_check.py T 0|1 [--data FILE]

The model as ``rnadiff train`` builds it on the scale benchmark's synthetic 10k file (make it
with ``make_files.py --sizes 10k``), the forward and backward of the denoising loss on one
minibatch of 128 cells repeated 100 times after 5 warm-up steps (the compiled graph's first
call compiles it), eager (0) or compiled (1), at T threads; prints ms per step.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import step_profile  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("threads", type=int)
    p.add_argument("compiled", type=int, choices=(0, 1))
    p.add_argument(
        "--data", type=Path, default=HERE.parent / "results/scale/data/synthetic_10k.h5ad"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from rnadiff.data._loader import CellMatrix, ConditionTable
    from rnadiff.diffusion import denoising_loss
    from rnadiff.model._data import source_for

    model = step_profile.build_model(args.data, None)
    net = model.denoiser
    net.train()
    data = CellMatrix.of(model.adata, model.preprocess, source_for(model, model.adata, None))
    conds = ConditionTable(model.registry, model.adata.obs)
    idx = torch.arange(128)
    x0, cond = data.rows(idx), conds.rows(idx)
    sigma, noise = torch.rand(128) + 0.1, torch.randn(128, x0.shape[1])
    f = torch.compile(net) if args.compiled else net
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def step():
        loss = denoising_loss(f, x0, sigma, noise, cond=cond, sigma_data=0.5).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()

    t0 = time.perf_counter()
    for _ in range(5):
        step()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(100):
        step()
    ms = 1000 * (time.perf_counter() - t0) / 100
    print(f"threads {args.threads}, compiled {bool(args.compiled)}: {ms:.2f} ms forward + "
          f"backward per step of 128 cells (first 5 steps {warm:.1f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
