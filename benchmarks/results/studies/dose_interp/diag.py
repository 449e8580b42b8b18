"""Where rnadiff loses to linear interpolation at an unseen dose (issue 22, sim_dose).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/results/studies/dose_interp/diag.py WORLD LABEL

A simulated world with ``sim_dose``'s protocol (8 drugs x 0.1/0.3/1/3/10 uM, 2 cell types;
1 and 10 uM of every drug held out) at a seed the benchmark does not score (>= 10), rnadiff
trained as the benchmark trains it. For each held-out (cell type, drug, dose), Pearson delta
top-50 and R² of means against the held-out cells of:

- ``anchored``: ``predict`` (the default: network + interpolated residuals, shrunk);
- ``network``: ``predict(anchor=False)``;
- ``linear``: the benchmark's baseline, linear in log dose between the measured means;
- ``linear+curvature``: linear + [network(d) - the network's own linear interpolation at d]
  (the residuals interpolated unshrunk);
- ``nearest``: the nearest measured dose's mean; ``nearest+network``: the nearest dose's
  mean + [network(d) - network(nearest)];
- the oracle (2,000 fresh cells of the true condition).

Prints a table; rows to ``diag.csv`` (``code``: LABEL, which anchoring rule the code had).
"""

import sys
from pathlib import Path

import pandas as pd
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # benchmarks/
import _drug_tasks as dt  # noqa: E402

from rnadiff.evaluation._benchmark import BenchConfig  # noqa: E402


def main(world: int, label: str) -> pd.DataFrame:
    torch.set_num_threads(1)
    config = BenchConfig()
    adata, truth, train, model, _ = dt.dose_split(world, config)
    rows, measured = [], {}
    kw = dict(steps=config.sampler_steps, seed=world, progress=False)
    for case in dt.dose_cases(adata, train, model, dt.DOSE_FOLDS):
        ct, drug, dose, source = case["cell_type"], case["drug"], case["dose"], case["source"]
        doses, means, control = case["doses"], case["means"], case["control"]

        def net(d, drug=drug, source=source):
            target = {"perturbation": drug, "dose": d}
            p = model.predict(source, target=target, anchor=False, **kw)
            return model.log_expression(p).mean(0)

        if (ct, drug) not in measured:  # the network at the measured doses, once per pair
            measured[ct, drug] = [net(d) for d in doses]
        net_measured = measured[ct, drug]
        anchored = model.log_expression(
            model.predict(source, target={"perturbation": drug, "dose": dose}, **kw)
        )
        nd = net(dose)
        lin = dt._log_interp(doses, means, dose)
        curv = nd - dt._log_interp(doses, net_measured, dose)
        near = dt._nearest_dose(doses, means, dose)
        near_net = dt._nearest_dose(doses, net_measured, dose)
        preds = {
            "anchored": anchored,
            "network": nd,
            "linear": lin,
            "linear+curvature": lin + curv,
            "nearest": near,
            "nearest+network": near + (nd - near_net),
            "oracle": dt._oracle(model, truth, ct, drug, dose, world),
        }
        shift = control.mean(0)
        preds = {m: p if p.ndim == 2 else control + (p - shift) for m, p in preds.items()}
        name = f"{ct}:{drug}@{dose:g}"
        rows += dt._scores("diag", case["fold"], world, name, preds, case["real"], control)
    df = pd.DataFrame(rows).assign(code=label)
    csv = HERE / "diag.csv"
    old = pd.read_csv(csv) if csv.is_file() else pd.DataFrame()
    pd.concat([old, df], ignore_index=True).to_csv(csv, index=False)
    return df


if __name__ == "__main__":
    df = main(int(sys.argv[1]), sys.argv[2])
    print(df.pivot_table(index="method", columns=["fold", "metric"], values="value").round(3))
