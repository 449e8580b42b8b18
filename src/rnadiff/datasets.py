"""The dataset registry, e.g. ``rnadiff.datasets.load("kang2018_ifnb")``."""

from rnadiff.data._datasets import REGISTRY, DatasetInfo, fetch, list_datasets, load, load_smiles
from rnadiff.data._simulate import simulate
from rnadiff.data._simulate_truth import SimulationTruth

__all__ = [
    "REGISTRY",
    "DatasetInfo",
    "SimulationTruth",
    "fetch",
    "list_datasets",
    "load",
    "load_smiles",
    "simulate",
]
