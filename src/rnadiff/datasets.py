"""The dataset registry, e.g. ``rnadiff.datasets.load("kang2018_ifnb")``."""

from rnadiff.data._datasets import REGISTRY, DatasetInfo, fetch, list_datasets, load, load_smiles

__all__ = ["REGISTRY", "DatasetInfo", "fetch", "list_datasets", "load", "load_smiles"]
