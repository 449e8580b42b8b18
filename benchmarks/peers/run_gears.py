"""GEARS peer runner (``cell-gears``; run with ``.peers/gears/bin/python``).

GEARS (Roohani et al. 2023) predicts the transcriptome after a *genetic* perturbation: a GNN
over a gene co-expression graph and a Gene Ontology (GO) graph of the perturbed genes adds a
perturbation-specific shift to a control cell's expression. It applies to gene knock-outs
(Papalexi), not to a stimulation (Kang's IFN-beta): targets must be gene symbols in the GO
annotations, else the runner fails with that reason.

GO annotations offline: GEARS downloads ``gene2go_all.pkl`` (NCBI gene -> GO terms) from
Harvard Dataverse at run time. The same annotations ship in Debian's
``r-bioc-org.hs.eg.db`` (Bioconductor org.Hs.eg.db 3.16: NCBI gene2go of 2022-09, GO of
2022-07), whose SQLite file is read here directly (no R needed): every gene's direct BP, MF and
CC terms, keyed by official symbol, with aliases resolved for the genes of the task (e.g.
MARCH8 -> MARCHF8). Point ``--go-db`` (or ``$GEARS_ORG_HS_DB``) at ``org.Hs.eg.sqlite``;
``install.sh gears`` extracts it into ``.peers/gears/org.Hs.eg.sqlite`` (``apt-get download``
+ ``dpkg-deb -x``, no R). ``PertData(default_pert_graph=False)`` then builds GEARS's GO graph
from the genes of the task (the perturbation genes and the expressed genes).

How the task is posed: conditions ``<gene>+ctrl`` / ``ctrl``, ``cell_type`` = the context;
a custom split puts every training condition in ``train`` (the task predicts seen knock-outs
from new control cells) and 3 of them also in ``val`` and ``test`` (GEARS keeps the epoch
with the best validation DE MSE, and fails on an empty test set). Prediction is per source
cell: each source cell's expression is the input graph (GEARS's
``create_cell_graph_for_prediction``) with the target's perturbation index, through the best
model. GEARS's defaults otherwise: hidden 64, 1 GO and 1 gene GNN layer,
20 similar genes, co-expression threshold 0.4, direction loss weight 0.1, Adam lr 1e-3 halved
every epoch (StepLR gamma 0.5), batch 32.

- ``quick``: 5 epochs.
- ``full``: 20 epochs (GEARS's tutorial value; the learning rate has halved 19 times by then).

``--max-epochs`` sets the epochs. The loss curve is GEARS's training loss per step.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _contract
import numpy as np

BUDGETS = {"quick": dict(epochs=5), "full": dict(epochs=20)}
MODEL = dict(hidden_size=64)
TRAIN = dict(lr=1e-3, batch_size=32, test_batch_size=128)
N_VAL_CONDITIONS = 3
DEFAULT_GO_DB = os.path.join(os.path.dirname(sys.executable), "..", "org.Hs.eg.sqlite")


def gene2go_from_orgdb(path: str, wanted: list[str]) -> tuple[dict, dict]:
    """``{symbol: set(GO ids)}`` (direct BP/MF/CC annotations) from an org.Hs.eg.db SQLite
    file, plus ``{wanted symbol: official symbol}`` for wanted symbols found only as aliases."""
    import sqlite3

    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    symbol = dict(con.execute("select _id, symbol from gene_info"))
    gene2go: dict[str, set] = {}
    for table in ("go_bp", "go_mf", "go_cc"):
        for gid, go in con.execute(f"select _id, go_id from {table}"):
            gene2go.setdefault(symbol[gid], set()).add(go)
    renamed = {}
    for g in wanted:
        if g in gene2go:
            continue
        hits = {
            symbol[i] for (i,) in con.execute("select _id from alias where alias_symbol=?", (g,))
        }
        hits &= set(gene2go)
        if len(hits) == 1:
            renamed[g] = hits.pop()
            gene2go[g] = gene2go[renamed[g]]
    con.close()
    return gene2go, renamed


def run(task: _contract.Task) -> _contract.Prediction:
    import json
    import multiprocessing.pool
    import pickle
    import tempfile
    from importlib import metadata

    import anndata as ad
    import gears.gears as gears_mod
    import gears.utils as gears_utils
    import pandas as pd
    import scipy.sparse as sp
    import torch
    from gears import GEARS, PertData
    from torch_geometric.data import DataLoader

    args = task.args
    epochs = args.max_epochs or BUDGETS[args.budget]["epochs"]
    pk, ck = args.perturbation_key, task.context_key
    go_db = os.environ.get("GEARS_ORG_HS_DB", DEFAULT_GO_DB)
    if not os.path.exists(go_db):
        raise FileNotFoundError(f"GO annotations not found: {go_db} (bash install.sh gears)")
    genes = [str(g) for g in task.train.var_names]
    labels = sorted(set(task.train.obs[pk]) - {args.control})
    gene2go, renamed = gene2go_from_orgdb(go_db, sorted(set(genes) | set(labels)))
    missing = [t for t in task.targets if t not in gene2go]
    if missing:
        raise ValueError(f"targets without GO annotations (not gene symbols?): {missing}")

    obs = task.train.obs
    condition = np.where(obs[pk] == args.control, "ctrl", obs[pk].astype(str) + "+ctrl")
    adata = ad.AnnData(
        X=sp.csr_matrix(_contract.dense(task.train.X).astype(np.float32)),
        obs=pd.DataFrame(
            {"condition": condition, "cell_type": obs[ck].astype(str).to_numpy()},
            index=obs.index.astype(str),
        ),
        var=pd.DataFrame({"gene_name": genes}, index=genes),
    )
    conditions = sorted(set(condition) - {"ctrl"})
    cwd = os.getcwd()
    losses: list[float] = []
    original_loss = gears_mod.loss_fct

    def recorded_loss(*a, **k):
        loss = original_loss(*a, **k)
        losses.append(float(loss.detach()))
        return loss

    with tempfile.TemporaryDirectory(prefix="gears-") as tmp:
        os.chdir(tmp)  # GEARS writes ./data/go_essential_<name>.csv
        try:
            os.makedirs("data", exist_ok=True)
            for name in ("gene2go_all.pkl", "gene2go.pkl"):  # found locally: no download
                with open(os.path.join("data", name), "wb") as f:
                    pickle.dump(gene2go, f)
            # GEARS also tests after training (an empty test set fails): the val conditions
            val = conditions[:N_VAL_CONDITIONS]
            split = {"train": conditions, "val": val, "test": val}
            with open("split.pkl", "wb") as f:
                pickle.dump(split, f)
            # GEARS builds the GO graph with Pool(25); one thread is enough for ~300 genes
            gears_utils.Pool = lambda n: multiprocessing.pool.ThreadPool(1)
            gears_mod.loss_fct = recorded_loss
            torch.manual_seed(args.seed)
            np.random.seed(args.seed)  # noqa: NPY002 - GEARS draws control cells from it
            pdata = PertData("data", default_pert_graph=False)
            pdata.new_data_process(dataset_name="peer", adata=adata)
            pdata.prepare_split(split="custom", seed=args.seed, split_dict_path="split.pkl")
            pdata.get_dataloader(
                batch_size=TRAIN["batch_size"], test_batch_size=TRAIN["test_batch_size"]
            )
            model = GEARS(pdata, device="cpu")
            model.model_initialize(**MODEL)
            with _contract.Timer() as t_train:
                model.train(epochs=epochs, lr=TRAIN["lr"])
        finally:
            gears_mod.loss_fct = original_loss
            os.chdir(cwd)

    x_src = _contract.dense(task.source.X).astype(np.float32)
    best = model.best_model.eval()
    with _contract.Timer() as t_pred, torch.no_grad():
        blocks = []
        for t in task.targets:
            idx = [model.pert_list.index(t)]
            graphs = [gears_utils.create_cell_graph_for_prediction(x, idx, [t]) for x in x_src]
            out = [best(b).cpu().numpy() for b in DataLoader(graphs, 256, shuffle=False)]
            blocks.append(np.concatenate(out, axis=0))
    X = np.concatenate(blocks, axis=0)
    notes = (
        f"GEARS {epochs} epochs (hidden 64, lr 1e-3 halved per epoch), GO graph from "
        f"org.Hs.eg.db 3.16 (Debian r-bioc-org.hs.eg.db; aliases resolved: {json.dumps(renamed)}),"
        f" all {len(conditions)} training conditions in train, {N_VAL_CONDITIONS} also in val; "
        f"per-cell predictions from the source cells; negative values clipped "
        f"({float((X < 0).mean()):.1%})"
    )
    return _contract.Prediction(
        X=np.clip(X, 0, None),
        version=f"cell-gears {metadata.version('cell-gears')}",
        train_s=t_train.s,
        predict_s=t_pred.s,
        epochs=epochs,
        notes=notes,
        settings={
            **MODEL,
            **TRAIN,
            "epochs": epochs,
            "go_annotations": "org.Hs.eg.db 3.16 (Debian r-bioc-org.hs.eg.db), BP+MF+CC direct",
            "aliases": renamed,
            "val_conditions": conditions[:N_VAL_CONDITIONS],
            "context_key": ck,
        },
        history=losses,
        history_unit="step",
    )


if __name__ == "__main__":
    _contract.main("gears", run)
