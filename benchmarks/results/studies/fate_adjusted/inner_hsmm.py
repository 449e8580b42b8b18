"""Adjusted classify-and-count on HSMM's inner split (24 h held out of 0/24/72 h, predicted
from 0 h; the benchmark never scores it): composition error of rnadiff's predicted cells, and
of the classifier on the real held-out cells, with and without the confusion-matrix adjustment.

Run: RNADIFF_DATA_DIR=../shared/data OMP_NUM_THREADS=1 .venv/bin/python \
       benchmarks/results/studies/fate_adjusted/inner_hsmm.py SEED
"""

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from _tasks import task_splits

from rnadiff import RNADiffusion
from rnadiff.evaluation._benchmark import BenchConfig
from rnadiff.fate import StateClassifier, composition, composition_error

seed = int(sys.argv[1])
(split,) = task_splits("hsmm_inner", seed)
(ev,) = split.evaluations
cfg = BenchConfig()
train = split.train.copy()
RNADiffusion.setup_anndata(train, **split.setup)
model = RNADiffusion(train, config=cfg.model_config(), seed=seed)
model.train(config=cfg.train_config(seed), progress=False)
lab = train.obs["State"].notna().to_numpy()
clf = StateClassifier(seed=seed).fit(
    model.log_expression(train[lab]), train.obs["State"][lab].astype(str)
)
states = clf.states_
hours = pd.to_numeric(train.obs["Hours"]).to_numpy()
real = composition(ev.real.obs["State"].dropna().astype(str), states, n_boot=0)
pred = model.predict(ev.source, target=ev.target, seed=seed, progress=False)
gen = model.generate(ev.condition, n_cells=ev.real.n_obs, seed=seed, progress=False)
rows = []
for name, cells in (("counterfactual", pred), ("generation", gen), ("real cells", ev.real)):
    labels = clf.predict(model.log_expression(cells))
    for adjusted in (False, True):
        comp = composition(labels, states, n_boot=0, confusion=clf.confusion_ if adjusted else None)
        rows.append(
            dict(seed=seed, cells=name, adjusted=adjusted, error=composition_error(comp, real))
        )
measured = sorted(set(hours[lab]))
for t in measured:
    m = lab & (hours == t)
    comp = composition(train.obs["State"][m].astype(str), states, n_boot=0)
    rows.append(
        dict(
            seed=seed,
            cells=f"measured {t:g} h",
            adjusted=False,
            error=composition_error(comp, real),
        )
    )
out = pd.DataFrame(rows)
out["cv_accuracy"] = clf.cv_accuracy_
print(out.to_string())
path = Path(__file__).with_name("inner_hsmm.csv")
out.to_csv(path, mode="a", header=not path.exists(), index=False)
