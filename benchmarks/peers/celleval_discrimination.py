"""cell-eval's perturbation discrimination score of one prediction with many perturbations.

Run with the cell-eval venv (``bash benchmarks/peers/install.sh celleval``)::

    .peers/celleval/bin/python benchmarks/peers/celleval_discrimination.py REAL.h5ad PRED.h5ad \\
        --pert-col COL --control LABEL

Both files hold log-normalized cells of every perturbation and of the control (label
``LABEL`` in ``COL``); the gene names must be the same, in the same order. Calls
``cell_eval.metrics.discrimination_score`` (L1, on the pseudobulk changes from each file's own
control) with and without ``exclude_target_gene`` and prints one JSON object
``{"exclude_target_gene": {pert: score}, "all_genes": {pert: score}, "n": N}``. cell-eval's
score is ``1 - r / N`` with ``r`` the number of real perturbations closer than the right one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import anndata as ad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("real", type=Path)
    parser.add_argument("pred", type=Path)
    parser.add_argument("--pert-col", required=True)
    parser.add_argument("--control", required=True)
    args = parser.parse_args()
    from cell_eval._types import PerturbationAnndataPair
    from cell_eval.metrics import discrimination_score

    pair = PerturbationAnndataPair(
        real=ad.read_h5ad(args.real),
        pred=ad.read_h5ad(args.pred),
        pert_col=args.pert_col,
        control_pert=args.control,
    )
    out = {
        "exclude_target_gene": discrimination_score(pair, metric="l1", exclude_target_gene=True),
        "all_genes": discrimination_score(pair, metric="l1", exclude_target_gene=False),
        "n": int(pair.perts.size),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
