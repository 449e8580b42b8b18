"""Studies: the benchmark run under several configurations, described in a TOML file.

A study file (``benchmarks/studies/<name>.toml``) names the question, the tasks, the seeds, the
metrics to compare and its variants; each variant is a set of overrides of the benchmark's
configuration::

    [study]
    question = "How many genes should a model model by default?"
    tasks = ["kang9k_heldout", "hsmm_time"]
    seeds = 3
    metrics = ["pearson_delta_top100", "r2_mean_top100", "edistance"]

    [variants.n2000]
    n_top_genes = 2000

    [variants.default]   # no overrides: the defaults

Keys of a variant: ``n_top_genes`` (a number or ``"all"``), ``max_steps``, and any field of
the model's configuration as ``network.<field>``, ``diffusion.<field>``, ``preprocess.<field>``
or ``p_drop``, and of the training configuration as ``train.<field>``. Each variant's run
goes to ``<out>/<variant>/`` (the benchmark's own files); the comparison to ``study.csv`` and
``study.md``.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pandas as pd

from rnadiff import ModelConfig, TrainConfig
from rnadiff.data._io import write_csv, write_text
from rnadiff.evaluation._benchmark import BenchConfig, summarize

STUDIES = Path(__file__).resolve().parent / "studies"


def load_study(name_or_path: str) -> dict:
    """The study ``name`` (a file of ``benchmarks/studies/``) or the TOML file at a path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = STUDIES / f"{name_or_path}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in STUDIES.glob("*.toml"))
        raise SystemExit(f"no study {name_or_path!r}; studies: {known}")
    study = tomllib.loads(path.read_text())
    if "study" in study and study["study"].get("procedure"):
        study["name"] = path.stem
        return study  # a procedure of its own (e.g. the nested choice of a default)
    if "study" not in study or not study.get("variants"):
        raise SystemExit(f"{path}: needs a [study] table and at least one [variants.NAME]")
    study["name"] = path.stem
    return study


def bench_config(overrides: dict) -> BenchConfig:
    """The benchmark's configuration with a variant's ``overrides``."""
    model, train = ModelConfig(), TrainConfig()
    plain: dict = {}
    for key, value in overrides.items():
        part, _, field = key.partition(".")
        if part in ("network", "diffusion", "preprocess"):
            sub = dataclasses.replace(getattr(model, part), **{field: value})
            model = dataclasses.replace(model, **{part: sub})
        elif part == "train":
            train = dataclasses.replace(train, **{field: value})
        elif key == "p_drop":
            model = dataclasses.replace(model, p_drop=value)
        elif key == "n_top_genes":
            plain[key] = None if value == "all" else int(value)
        elif key == "max_steps":
            plain[key] = int(value)
        else:
            raise SystemExit(f"unknown variant key {key!r}")
    changed = {"model": model} if model != ModelConfig() else {}
    changed |= {"train": train} if train != TrainConfig() else {}
    return BenchConfig(**changed, **plain)


def report(study: dict, out: Path) -> str:
    """``study.csv`` (variant, task, method, metric, mean, sd, n) and ``study.md``: the
    variants side by side on the study's metrics."""
    frames = []
    for variant in study["variants"]:
        folds = out / variant / "folds.csv"
        if folds.is_file():
            frames.append(summarize(pd.read_csv(folds)).assign(variant=variant))
    if not frames:
        return "no results yet"
    table = pd.concat(frames)
    write_csv(table, out / "study.csv", index=False)
    meta = study["study"]
    metrics = meta.get("metrics") or sorted(set(table.metric))
    methods = meta.get("methods")
    lines = [f"# Study `{study['name']}`", "", meta.get("question", ""), ""]
    for task, frame in table.groupby("task"):
        frame = frame[frame.metric.isin(metrics)]
        if methods:
            frame = frame[frame.method.isin(methods)]
        cell = frame["mean"].map("{:.3f}".format) + " ± " + frame["sd"].map("{:.3f}".format)
        wide = frame.assign(v=cell).pivot_table(
            index=["method", "variant"], columns="metric", values="v", aggfunc="first"
        )
        wide = wide[[m for m in metrics if m in wide.columns]]
        lines += [f"## {task}", "", "| method | variant | " + " | ".join(wide.columns) + " |"]
        lines.append("|---" * (len(wide.columns) + 2) + "|")
        lines += [f"| {m} | {v} | " + " | ".join(row) + " |" for (m, v), row in wide.iterrows()]
        lines.append("")
    text = "\n".join(lines)
    write_text(text, out / "study.md")
    return text
