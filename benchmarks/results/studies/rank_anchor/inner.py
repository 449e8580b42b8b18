"""Should ``rank_perturbations``' generation score use the anchored cells (``anchor=True``, as
``predict`` does) or the network's own? Chosen on inner splits the benchmark does not score.

``python inner.py lincs|sim|papalexi SEED``:

- ``lincs`` / ``sim``: the outer split of ``lincs_unseen_drug`` (seed SEED; for ``sim`` the
  ``sim_unseen_drug`` world, which the benchmark does not rank) has its held-out drugs removed
  entirely; of the rest, 20% of the drugs with a structure are held out again (seed SEED + 100)
  and the model trains on the others. Each inner held-out drug's highest-dose change is the
  target; every drug is ranked (held-out ones by SMILES) as ``lincs_drug_rank`` does.
- ``papalexi``: the outer ``papalexi_seen`` split's training cells are split again
  (``papalexi_seen`` with seed SEED + 100: 20% of every knock-out's cells held out); the model
  trains on the rest; ``papalexi_rank`` (each knock-out's held-out cells as the target) and
  ``papalexi_marker_rank`` (IFN-gamma response genes down) are scored on the inner split.

Both settings are scored on the same model; rows (``method`` tagged ``[anchor]`` or
``[network]``; baselines once) appended to ``rows.jsonl`` beside this file.
"""

import functools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # benchmarks/
import _drug_tasks as dt
from run import bench_config

from rnadiff import RNADiffusion, datasets
from rnadiff.data import _splits as splits
from rnadiff.evaluation import _design_tasks as design
from rnadiff.evaluation._benchmark import prepare

which, seed = sys.argv[1], int(sys.argv[2])
config = bench_config(None, None)
rows = []


def both(fn, model, *args, **kw):
    """``fn``'s rows with ``model.rank_perturbations`` anchored and not (method tagged)."""
    out = []
    for anchor in (True, False):
        model.rank_perturbations = functools.partial(
            RNADiffusion.rank_perturbations, model, anchor=anchor
        )
        tag = "[anchor]" if anchor else "[network]"
        for r in fn(model, *args, **kw):
            if r["method"].startswith("rnadiff"):
                out.append(r | {"method": f"{r['method']} {tag}"})
            elif anchor:
                out.append(r)
    del model.rank_perturbations
    return out


if which in ("lincs", "sim"):
    if which == "lincs":
        adata = dt._lincs()
        setup, key, dkey, control_name = dt._lincs_setup(), "pert_iname", "pert_dose", "DMSO"
        kw = dict(input_type="log2")
    else:
        adata, _ = dt.sim_drug_world(seed)
        setup, key, dkey, control_name = dt._sim_setup(), "perturbation", "dose", "control"
        kw = dict(context_keys=("cell_type",))
    obs = adata.obs
    smiles = sorted(dt.smiles_table(obs, key, control_name))
    outer = dt._unseen_split(smiles, seed)
    inner = adata[~obs[key].astype(str).isin(outer).to_numpy()].copy()
    original = dt._rank_rows
    captured = []

    def rank_rows(task, s, model, *args):
        captured.extend(both(lambda m: original(task, s, m, *args), model))
        return []

    dt._rank_rows = rank_rows
    dt._unseen_drug_rows(
        f"{which}_inner_rank", seed + 100, config, inner, setup, key=key, dkey=dkey,
        control_name=control_name, rank_task=f"{which}_inner_rank", **kw,
    )  # fmt: skip
    rows = captured
else:
    data = splits.papalexi_clean(datasets.load("papalexi2021"))
    (outer,) = splits.papalexi_seen(data, seed=seed)
    (split,) = splits.papalexi_seen(outer.train, seed=seed + 100)
    prep = prepare(split, config)
    train = split.train.copy()
    RNADiffusion.setup_anndata(train, **split.setup)
    model = RNADiffusion(train, config=config.model_config(), seed=seed + 100)
    model.train(config=config.train_config(seed + 100), progress=False)
    rows = both(lambda m: design.papalexi_rank_rows(split, prep, m), model)
    rows += both(lambda m: design.papalexi_marker_rows(split, prep, m), model)
    rows = [r | {"task": f"inner_{r['task']}"} for r in rows]

with Path(__file__).with_name("rows.jsonl").open("a") as f:
    for r in rows:
        f.write(
            json.dumps(
                {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
                | {"outer_seed": seed}
            )
            + "\n"
        )
print(which, seed, "done", len(rows))
