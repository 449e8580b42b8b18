"""The nested-validation script (benchmarks/nested_defaults.py) and the benchmark's --width."""

import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import _nested as nd  # noqa: E402


def _inner(rows):
    cols = ["outer", "inner", "value", *nd.METRICS]
    return pd.DataFrame(rows, columns=cols)


def test_choose_ranks_each_metric_in_its_direction_and_breaks_ties_by_order():
    # fold A: value 2 is better on all three metrics (higher, higher, lower E-distance)
    # fold B: both values score the same: the first listed (1) wins the tie
    inner = _inner(
        [
            ("A", "x", 1, 0.8, 0.7, 3.0),
            ("A", "y", 1, 0.8, 0.7, 3.0),
            ("A", "x", 2, 0.9, 0.8, 2.0),
            ("A", "y", 2, 0.9, 0.8, 2.0),
            ("B", "x", 1, 0.5, 0.5, 1.0),
            ("B", "x", 2, 0.5, 0.5, 1.0),
        ]
    )
    ranked = nd.choose(inner, (1, 2))
    chosen = ranked[ranked.chosen].set_index("outer")["value"]
    assert chosen.to_dict() == {"A": 2, "B": 1}
    a = ranked[ranked.outer == "A"].set_index("value")
    assert a.loc[2, "mean_rank"] == 1.0 and a.loc[1, "mean_rank"] == 2.0
    # a lower E-distance alone does not outweigh two worse metrics
    inner = _inner([("C", "x", 1, 0.9, 0.9, 5.0), ("C", "x", 2, 0.8, 0.8, 1.0)])
    ranked = nd.choose(inner, (1, 2))
    assert ranked[ranked.chosen]["value"].tolist() == [1]


def test_fold_wins_compares_with_the_same_fold_and_seed_only():
    table = pd.DataFrame(
        [
            {
                "fold": "B",
                "rule": "fixed 1",
                "pearson_delta_top100": 0.9,
                "r2_mean_top100": 0.5,
                "edistance": 2.0,
            }
        ]
    )
    rows = []
    for seed, add in ((0, 0.0), (1, 10.0)):  # seed 1 would flip every comparison
        for method, pd100, r2, e in (
            ("baseline: additive", 0.8, 0.6, 3.0),
            ("scgen", 0.95, 0.4, 2.0),  # E-distance tie: no win
        ):
            for metric, v in zip(nd.METRICS, (pd100 + add, r2 + add, e - add), strict=True):
                rows.append(
                    {
                        "task": "kang_loo_celltype",
                        "fold": "B",
                        "seed": seed,
                        "method": method,
                        "metric": metric,
                        "value": v,
                    }
                )
    rows.append(
        {
            "task": "papalexi_seen",
            "fold": "B",
            "seed": 0,
            "method": "cpa",
            "metric": "edistance",
            "value": 99.0,
        }
    )
    wins = nd.fold_wins(table, pd.DataFrame(rows), seed=0)
    got = wins.set_index(["rival", "metric"])["win"].to_dict()
    assert got == {
        ("baseline: additive", "pearson_delta_top100"): True,
        ("baseline: additive", "r2_mean_top100"): False,
        ("baseline: additive", "edistance"): True,
        ("scgen", "pearson_delta_top100"): False,
        ("scgen", "r2_mean_top100"): True,
        ("scgen", "edistance"): False,
    }


def test_benchmark_width_option_changes_only_the_network_width():
    import run as bench

    assert bench.bench_config(None, None) == bench.BenchConfig()
    assert bench.BenchConfig().model_config().network.width != 64
    config = bench.bench_config(800, 64)
    assert config.model_config().network.width == 64
    assert config.train_config(0).max_steps == 800
    default = bench.BenchConfig().model_config()
    changed = config.model_config()
    assert changed.preprocess == default.preprocess and changed.diffusion == default.diffusion
    assert changed.network.depth == default.network.depth
