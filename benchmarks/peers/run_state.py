"""STATE peer runner (Arc Institute ``arc-state``; run with ``.peers/state/bin/python``).

STATE's transition model (Adduri et al. 2025) maps a *set* of control cells of a context to the
set of perturbed cells (a transformer over cell sets, trained with an energy-distance loss on
sets of ``cell_set_len`` cells). It is driven through its own command line, as documented:

1. The training cells (log-normalized X: the project's 1e4 + log1p, so ``state tx
   preprocess_train``'s normalisation is not repeated; every gene is used) go into a folder
   with a TOML (``[datasets]``, ``[training] <name> = "train"``).
2. ``state tx train`` with ``model=state_sm`` on CPU: ``model.device=cpu``,
   ``data.kwargs.num_workers=0 pin_memory=false``, ``embed_key=null output_space=all``,
   ``pert_col`` / ``cell_type_key`` (the context: cell type, else batch, else one) /
   ``batch_col`` (``--batch-key``, else one) / ``control_pert`` from the command line,
   ``use_wandb=false``, one final checkpoint.
3. ``state tx infer`` on an AnnData of the source cells (control) plus, per target, a copy of
   them labelled with the target: STATE predicts each target set from control cells of the
   same context drawn with ``--seed`` (so a predicted cell is not tied to one source cell;
   the blocks have as many cells as the source).

Budget: STATE's defaults (``state_sm``: hidden 672, 4 transformer layers, 55 M parameters;
400k steps of 16 sets) are GPU-sized; ``state_sm`` ran at ~5 s per step of 8 sets of 128 cells
on one shared core. Here the backbone is shrunk to fit a CPU budget: hidden 128, 2 layers of
4 heads (head dim 32, MLP 512), cell sets of 64, batch 8 sets, Adam lr 1e-4 (STATE's default).

- ``quick``: 1000 steps.
- ``full``: 4000 steps.

``--max-epochs`` sets the steps. The loss curve is STATE's ``train_loss`` (logged every 10
steps; ``history_unit`` says so).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _contract
import numpy as np

BUDGETS = {"quick": dict(max_steps=1000), "full": dict(max_steps=4000)}
MODEL = {
    "model.kwargs.hidden_dim": 128,
    "model.kwargs.cell_set_len": 64,
    "model.kwargs.n_encoder_layers": 2,
    "model.kwargs.n_decoder_layers": 2,
    "model.kwargs.transformer_backbone_kwargs.intermediate_size": 512,
    "model.kwargs.transformer_backbone_kwargs.num_hidden_layers": 2,
    "model.kwargs.transformer_backbone_kwargs.num_attention_heads": 4,
    "model.kwargs.transformer_backbone_kwargs.num_key_value_heads": 4,
    "model.kwargs.transformer_backbone_kwargs.head_dim": 32,
}
TRAINING = {"training.batch_size": 8, "training.lr": 1e-4}
LOG_EVERY = 10
BATCH_COLUMN = "state_batch"  # --batch-key, or one batch


def _state_cli() -> str:
    return str(Path(sys.executable).with_name("state"))


def _run(cmd: list[str], log: Path) -> None:
    with open(log, "w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=os.environ.copy())
    if done.returncode != 0:
        tail = log.read_text().strip().splitlines()[-5:]
        raise RuntimeError(f"{cmd[1:3]} exited {done.returncode}: {' | '.join(tail)}")


def run(task: _contract.Task) -> _contract.Prediction:
    from importlib import metadata

    import anndata as ad
    import pandas as pd

    args = task.args
    steps = args.max_epochs or BUDGETS[args.budget]["max_steps"]
    pk, ck = args.perturbation_key, task.context_key

    def prepared(a: ad.AnnData) -> ad.AnnData:
        obs = pd.DataFrame(
            {
                pk: a.obs[pk].astype(str),
                ck: a.obs[ck].astype(str),
                BATCH_COLUMN: a.obs[args.batch_key].astype(str) if args.batch_key else "b0",
            },
            index=a.obs_names.astype(str),
        )
        x = _contract.dense(a.X).astype(np.float32)
        return ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=a.var_names.astype(str)))

    with tempfile.TemporaryDirectory(prefix="state-") as tmp:
        tmp = Path(tmp)
        (tmp / "data").mkdir()
        prepared(task.train).write_h5ad(tmp / "data" / "train.h5ad")
        (tmp / "exp.toml").write_text(
            f'[datasets]\npeer = "{tmp / "data"}"\n\n[training]\npeer = "train"\n\n'
            "[zeroshot]\n\n[fewshot]\n"
        )
        overrides = {
            "data.kwargs.toml_config_path": tmp / "exp.toml",
            "data.kwargs.embed_key": "null",
            "data.kwargs.output_space": "all",
            "data.kwargs.num_workers": 0,
            "data.kwargs.pin_memory": "false",
            "data.kwargs.control_pert": args.control,
            "data.kwargs.pert_col": pk,
            "data.kwargs.cell_type_key": ck,
            "data.kwargs.batch_col": BATCH_COLUMN,
            "model": "state_sm",
            "model.device": "cpu",
            **MODEL,
            **TRAINING,
            "training.max_steps": steps,
            "training.val_freq": steps,
            "training.ckpt_every_n_steps": steps,
            "training.train_seed": args.seed,
            "+training.log_every_n_steps": LOG_EVERY,
            "use_wandb": "false",
            "output_dir": tmp / "out",
            "name": "run",
        }
        cmd = [_state_cli(), "tx", "train", *[f"{k}={v}" for k, v in overrides.items()]]
        with _contract.Timer() as t_train:
            _run(cmd, tmp / "train.log")
        run_dir = tmp / "out" / "run"
        with open(run_dir / "version_0" / "metrics.csv") as f:
            losses = [float(r["train_loss"]) for r in csv.DictReader(f) if r.get("train_loss")]

        source = prepared(task.source)
        blocks = [source]
        for t in task.targets:
            b = source.copy()
            b.obs[pk] = t
            b.obs_names = [f"{n}@{t}" for n in source.obs_names]
            blocks.append(b)
        infer_in = ad.concat(blocks)
        infer_in.write_h5ad(tmp / "infer_in.h5ad")
        cmd = [
            _state_cli(), "tx", "infer",
            "--model-dir", str(run_dir),
            "--checkpoint", str(run_dir / "checkpoints" / "final.ckpt"),
            "--adata", str(tmp / "infer_in.h5ad"),
            "--pert-col", pk,
            "--celltype-col", ck,
            "--batch-col", BATCH_COLUMN,
            "--control-pert", args.control,
            "--output", str(tmp / "infer_out.h5ad"),
            "--seed", str(args.seed),
            "--quiet",
        ]  # fmt: skip
        with _contract.Timer() as t_pred:
            _run(cmd, tmp / "infer.log")
            out = ad.read_h5ad(tmp / "infer_out.h5ad")
        names = [f"{n}@{t}" for t in task.targets for n in source.obs_names]
        X = _contract.dense(out[names].X).astype(np.float32)
    notes = (
        f"STATE transition model (state_sm shrunk to hidden 128, 2 layers, sets of 64 cells), "
        f"{steps} steps of 8 sets on CPU (STATE's default: 400k steps, hidden 672); input and "
        f"output = the project's log-normalized X, all genes; each target block predicted from "
        f"control sets of the source's context sampled with --seed; negative values clipped "
        f"({float((X < 0).mean()):.1%})"
    )
    return _contract.Prediction(
        X=np.clip(X, 0, None),
        version=f"arc-state {metadata.version('arc-state')}",
        train_s=t_train.s,
        predict_s=t_pred.s,
        epochs=steps,
        notes=notes,
        settings={
            "model": "state_sm",
            **MODEL,
            **TRAINING,
            "max_steps": steps,
            "context_key": ck,
            "batch_key": args.batch_key,
            "unit": "steps",
        },
        history=losses,
        history_unit=f"{LOG_EVERY} steps (train_loss logged every {LOG_EVERY} steps)",
    )


if __name__ == "__main__":
    _contract.main("state", run)
