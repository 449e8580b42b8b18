"""Variant: the dose is dropped only together with the perturbation (never alone)."""

import runpy
import sys
from pathlib import Path

import torch

import rnadiff.training._loop as loop
from rnadiff.conditioning._nulls import null_like

orig = loop.random_drop


def tied(cond, p, *, generator=None):
    out = orig(cond, p, generator=generator)
    if "dose" in out and "perturbation" in out:
        pert_null = (out["perturbation"] != 0).sum(1) == 0
        out["dose"] = torch.where(pert_null, null_like(cond["dose"]), cond["dose"])
    return out


loop.random_drop = tied
sys.argv = [sys.argv[0], sys.argv[1], "tied=1"]
runpy.run_path(str(Path(__file__).with_name("dose_explore.py")), run_name="__main__")
