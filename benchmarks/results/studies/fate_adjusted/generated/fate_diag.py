"""Generated cells' state composition on the simulator's fate design (worlds the benchmark
does not score): held-out 48 h by the interpolated denoiser (gen_interp) or by a mixture of
cells generated at 24 h and 72 h (gen_mixture), and the composition error of generated cells
at the *measured* times against their training cells (repro24, repro72).

Run: RNADIFF_DATA_DIR=../shared/data OMP_NUM_THREADS=1 .venv/bin/python \
       benchmarks/results/studies/fate_adjusted/generated/fate_diag.py WORLD STEPS SAMPLER_STEPS
"""

import sys

import numpy as np

from rnadiff import RNADiffusion
from rnadiff._config import TrainConfig
from rnadiff.datasets import simulate
from rnadiff.fate import StateClassifier, composition, composition_error

world = int(sys.argv[1])
steps = int(sys.argv[2])
sampler_steps = int(sys.argv[3])
adata, truth = simulate(
    9000,
    seed=world,
    n_genes=300,
    n_genetic=0,
    n_combinations=0,
    n_drugs=4,
    n_cell_types=1,
    times=(0.0, 24.0, 48.0, 72.0),
    doses=(10.0,),
)
obs = adata.obs
pert = (obs.perturbation != "control").to_numpy()
held = pert & (obs.time == 48.0).to_numpy()
train = adata[~held].copy()
RNADiffusion.setup_anndata(
    train,
    perturbation_key="perturbation",
    control="control",
    cell_type_key="cell_type",
    dose_key="dose",
    smiles_key="smiles",
    time_key="time",
)
model = RNADiffusion(train, seed=0)
model.train(config=TrainConfig(seed=0, min_steps=steps, max_steps=max(4000, steps)), progress=False)
tobs = train.obs
clf = StateClassifier(seed=0).fit(model.log_expression(train), tobs.state.astype(str))
states = clf.states_
source = adata[(~pert & (obs.time == 48.0)).to_numpy()]
res = {}
for drug in sorted(set(obs.perturbation[pert])):
    rm = held & (obs.perturbation == drug).to_numpy()
    real = composition(obs.state[rm].astype(str), states, n_boot=0)["proportion"]
    ct = str(obs.cell_type[rm].iloc[0])
    n = int(rm.sum())

    def meas(t, drug=drug):
        m = ((tobs.perturbation == drug) & (tobs.time == t)).to_numpy()
        return composition(tobs.state[m].astype(str), states, n_boot=0)["proportion"]

    def gen(t, k, drug=drug, ct=ct):
        g = model.generate(
            {"perturbation": drug, "dose": 10.0, "time": t, "cell_type": ct},
            n_cells=k,
            steps=sampler_steps,
            seed=0,
            progress=False,
        )
        return clf.predict(model.log_expression(g))

    comps = {
        "gen_interp": composition(gen(48.0, n), states, n_boot=0),
        "gen_mixture": composition(
            np.concatenate([gen(24.0, n // 2), gen(72.0, n - n // 2)]), states, n_boot=0
        ),
        "gen_24": composition(gen(24.0, n), states, n_boot=0),
        "gen_72": composition(gen(72.0, n), states, n_boot=0),
        "lin": (meas(24.0) + meas(72.0)) / 2,
        "near24": meas(24.0),
    }
    # reproduction of measured times
    for t in (24.0, 72.0):
        comps[f"gen_{int(t)}_vs_meas"] = None
        res.setdefault(f"repro{int(t)}", []).append(
            composition_error(composition(gen(t, 300), states, n_boot=0), meas(t))
        )
    for k, c in comps.items():
        if c is not None:
            res.setdefault(k, []).append(composition_error(c, real))
for k, v in res.items():
    print(world, steps, sampler_steps, k, round(float(np.mean(v)), 3), flush=True)
