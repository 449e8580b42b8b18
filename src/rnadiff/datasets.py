"""The dataset registry: ``rnadiff.datasets.load("kang2018_ifnb")`` (see ``rnadiff.data.datasets``)."""

from rnadiff.data.datasets import REGISTRY, DatasetInfo, fetch, list_datasets, load, load_smiles

__all__ = ["REGISTRY", "DatasetInfo", "fetch", "list_datasets", "load", "load_smiles"]
