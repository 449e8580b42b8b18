"""The sim_dose design on a simulated world the benchmark does not score (shared by the
exploration scripts here): 2 cell types x 8 drugs at 0.1 / 0.3 / 1 / 3 / 10 uM, 1 and 10 uM
held out; the training cells registered for rnadiff."""

from rnadiff import RNADiffusion
from rnadiff.datasets import simulate


def world(seed: int):
    """``(adata, obs, perturbed mask, training cells)`` of simulated world ``seed``."""
    adata, _ = simulate(
        9000, seed=seed, n_genes=300, n_cell_types=2, n_genetic=0, n_combinations=0,
        n_drugs=8, times=(24.0,), doses=(0.1, 0.3, 1.0, 3.0, 10.0),
    )  # fmt: skip
    obs = adata.obs
    pert = (obs.perturbation != "control").to_numpy()
    held = pert & obs.dose.isin([1.0, 10.0]).to_numpy()
    train = adata[~held].copy()
    RNADiffusion.setup_anndata(
        train, perturbation_key="perturbation", control="control", cell_type_key="cell_type",
        dose_key="dose", smiles_key="smiles",
    )  # fmt: skip
    return adata, obs, pert, train
