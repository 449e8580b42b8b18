"""Does the discrimination score reward exaggerated effects? (Papalexi 2021, seen knock-outs)

The benchmark's ``papalexi_seen`` splits (3 seeds) without any model: each knock-out's held-out
mean change is predicted by its training mean change (knock-out minus non-targeting training
cells, the additive baseline's shift) multiplied by a factor. For each factor: the
discrimination score (the benchmark's code, L1 as in cell-eval), and the accuracy of the
predicted mean change against the real held-out one (mean squared error over all genes and
over each knock-out's top-20 genes of the training change). A factor above 1 exaggerates every
effect; if discrimination rises while the error grows, the score can be raised without better
predictions, and a small lead on it means little.

A second table asks the converse: do *more accurate* estimates of the change discriminate
better? Standard denoisers of the training change are scored the same way: per-gene positive-
part James-Stein shrinkage towards 0 (each gene's change times ``max(0, 1 - lam se^2 /
change^2)``, ``se`` its standard error from the training cells), an empirical-Bayes normal
prior per gene, a rank-r projection of the knock-outs x genes change matrix, and (the other
way) the training change plus Gaussian noise of its own standard error.

A third table asks how much room there is at all (headroom): could any predictor, however
accurate, beat the additive baseline here? Simulated splits whose true mean changes are known:
each knock-out's cells (training and held-out pooled) minus their mean are its residuals, and
a simulated cell is a true mean plus a residual drawn at random (a residual bootstrap; training
and held-out samples of the split's sizes, 20 draws per seed). The true changes are the pooled
mean changes themselves, or those denoised (James-Stein, empirical Bayes, as above: the raw
pooled changes carry sampling noise, which makes null knock-outs look distinct). In each
such world the oracle, which predicts every true mean change exactly, is scored against the
additive baseline's estimate from a training-sized sample; a world whose additive score matches
the real split's is the most plausible one.

    RNADIFF_DATA_DIR=../shared/data .venv/bin/python benchmarks/discrimination_scale.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from rnadiff import datasets
from rnadiff.data import _splits as splits
from rnadiff.evaluation._benchmark import BenchConfig, prepare, target_gene_indices
from rnadiff.evaluation._metrics import discrimination_score

OUT = Path("benchmarks/results/discrimination_scale")
FACTORS = (0.5, 0.7, 1.0, 1.3, 1.6, 2.0, 3.0)


def _prepared(data, seed: int):
    """The benchmark's papalexi_seen split of ``seed`` and its preprocessing."""
    split = next(splits.papalexi_seen(data, seed=seed))
    return split, prepare(split, BenchConfig())


def _seed_data(split, prep):
    """Held-out control and real cells, the training change and its standard error."""
    key, control = split.setup["perturbation_key"], split.setup["control"]
    groups = split.train.obs[key].astype(str).to_numpy()
    ctrl = prep.train[groups == control]
    real = {ev.name: prep.evaluations[ev.name]["real"] for ev in split.evaluations}
    held_control = prep.evaluations[split.evaluations[0].name]["control"]
    names = list(real)
    shift = np.stack([prep.train[groups == k].mean(0) - ctrl.mean(0) for k in names])
    se2 = np.stack(
        [
            prep.train[groups == k].var(0, ddof=1) / (groups == k).sum()
            + ctrl.var(0, ddof=1) / len(ctrl)
            for k in names
        ]
    )
    truth = np.stack([real[k].mean(0) - held_control.mean(0) for k in names])
    # as the benchmark (and cell-eval): each knock-out's target gene out of its own comparison
    exclude = target_gene_indices(split, prep.state.genes)
    return names, real, held_control, shift, se2, truth, exclude


def _score(names, real, held_control, change, shift, truth, exclude) -> dict:
    c = held_control.mean(0)
    pred = {k: (c + change[i])[None] for i, k in enumerate(names)}
    _, score = discrimination_score(pred, real, held_control, exclude=exclude)
    top = [np.argsort(-np.abs(shift[i]))[:20] for i in range(len(names))]
    return {
        "discrimination": score,
        "mse_change_all": float(np.mean((change - truth) ** 2)),
        "mse_change_top20": float(
            np.mean([np.mean((change[i] - truth[i])[t] ** 2) for i, t in enumerate(top)])
        ),
    }


def estimators(shift: np.ndarray, se2: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Estimates of the knock-outs' mean changes from their training change."""
    out = {"training change (additive)": shift}
    for lam in (1, 2):
        factor = np.clip(1 - lam * se2 / np.maximum(shift**2, 1e-12), 0, 1)
        out[f"James-Stein per gene, lam {lam}"] = shift * factor
    tau2 = np.maximum((shift**2).mean(0) - se2.mean(0), 0)  # per gene, over knock-outs
    out["empirical Bayes per gene"] = shift * tau2 / (tau2 + se2)
    u, s, vt = np.linalg.svd(shift, full_matrices=False)
    for r in (5, 10):
        out[f"rank {r}"] = (u[:, :r] * s[:r]) @ vt[:r]
    rng = np.random.default_rng(seed)
    out["plus noise of its own SE"] = shift + rng.normal(size=shift.shape) * np.sqrt(se2)
    return out


def seed_rows(split, prep, seed: int, factors=FACTORS) -> tuple[list[dict], list[dict]]:
    names, real, held_control, shift, se2, truth, exclude = _seed_data(split, prep)
    scaled = [
        {
            "seed": seed,
            "factor": f,
            **_score(names, real, held_control, f * shift, shift, truth, exclude),
        }
        for f in factors
    ]
    denoised = [
        {
            "seed": seed,
            "estimator": name,
            **_score(names, real, held_control, ch, shift, truth, exclude),
        }
        for name, ch in estimators(shift, se2, seed).items()
    ]
    return scaled, denoised


def headroom_rows(split, prep, seed: int, n_draws: int = 20) -> list[dict]:
    """Oracle vs additive discrimination on simulated splits with known true changes (see the
    module doc): one row per world, draw and predictor."""
    key, control = split.setup["perturbation_key"], split.setup["control"]
    groups = split.train.obs[key].astype(str).to_numpy()
    names = [ev.name for ev in split.evaluations]
    exclude = target_gene_indices(split, prep.state.genes)
    held = {k: prep.evaluations[k]["real"] for k in names}
    held[control] = prep.evaluations[names[0]]["control"]
    pools = {k: np.concatenate([prep.train[groups == k], held[k]]) for k in held}
    sizes = {k: (len(pools[k]) - len(held[k]), len(held[k])) for k in pools}  # train, held out
    means = {k: pools[k].mean(0) for k in pools}
    raw = np.stack([means[k] - means[control] for k in names])
    se2 = np.stack(
        [
            pools[k].var(0, ddof=1) / len(pools[k])
            + pools[control].var(0, ddof=1) / len(pools[control])
            for k in names
        ]
    )
    worlds = {
        "pooled change": raw,
        **{
            name.replace("training change", "pooled change"): change
            for name, change in estimators(raw, se2, seed).items()
            if name.startswith(("James-Stein", "empirical Bayes"))
        },
    }
    rng = np.random.default_rng(seed)

    def sample(k: str, mean: np.ndarray, n: int) -> np.ndarray:
        resid = pools[k][rng.integers(0, len(pools[k]), n)].mean(0) - means[k]
        return mean + resid

    rows = []
    for world, truth in worlds.items():
        true = {k: means[control] + truth[i] for i, k in enumerate(names)}
        true[control] = means[control]
        for d in range(n_draws):
            train = {k: sample(k, true[k], sizes[k][0]) for k in pools}
            test = {k: sample(k, true[k], sizes[k][1]) for k in pools}
            c = test[control]
            real = {k: test[k][None] for k in names}
            predictors = {
                "oracle (true change)": {k: true[k] - true[control] for k in names},
                "additive (training sample)": {k: train[k] - train[control] for k in names},
            }
            for predictor, change in predictors.items():
                pred = {k: (c + change[k])[None] for k in names}
                _, score = discrimination_score(pred, real, c[None], exclude=exclude)
                rows.append(
                    {
                        "seed": seed,
                        "world": world,
                        "draw": d,
                        "predictor": predictor,
                        "discrimination": score,
                    }
                )
    return rows


def _table(summary: pd.DataFrame, first: str) -> str:
    head = f"| {first} | discrimination | MSE of change, all genes | MSE of change, top-20 genes |"
    return (
        head
        + "\n|---|---|---|---|\n"
        + "".join(
            f"| {k if isinstance(k, str) else f'{k:g}'} | {r.iloc[0]:.3f} | {r.iloc[1]:.4f} | "
            f"{r.iloc[2]:.4f} |\n"
            for k, r in summary.iterrows()
        )
    )


def _headroom_table(head: pd.DataFrame, real_additive: float) -> str:
    wide = head.pivot_table(
        index=["world", "seed", "draw"], columns="predictor", values="discrimination"
    )
    wide["gap"] = wide["oracle (true change)"] - wide["additive (training sample)"]
    lines = [
        "",
        "## Headroom: a predictor that knows every true mean change",
        "",
        "Simulated splits (residual bootstrap) around each world's true changes; mean over "
        f"{wide.groupby(level='world').size().iloc[0]} draws (3 seeds x 20); gap: oracle minus "
        f"additive, paired by draw, mean ± se. The real split's additive score: "
        f"{real_additive:.3f}.",
        "",
        "| world (true changes) | additive | oracle | gap | oracle ahead / behind |",
        "|---|---|---|---|---|",
    ]
    for world in head["world"].unique():  # in the order simulated
        g = wide.xs(world, level="world")
        gap = g["gap"]
        lines.append(
            f"| {world} | {g['additive (training sample)'].mean():.3f} | "
            f"{g['oracle (true change)'].mean():.3f} | {gap.mean():+.3f} ± "
            f"{gap.std() / np.sqrt(len(gap)):.3f} | {(gap > 0).sum()} / {(gap < 0).sum()} |"
        )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = splits.papalexi_clean(datasets.load("papalexi2021"))
    scaled, denoised, head = [], [], []
    for s in range(args.seeds):
        split, prep = _prepared(data, s)
        a, b = seed_rows(split, prep, s)
        head += headroom_rows(split, prep, s)
        scaled += a
        denoised += b
    head = pd.DataFrame(head)
    head.to_csv(args.out / "headroom.csv", index=False)
    rows, est = pd.DataFrame(scaled), pd.DataFrame(denoised)
    rows.to_csv(args.out / "rows.csv", index=False)
    est.to_csv(args.out / "estimators.csv", index=False)
    cols = ["discrimination", "mse_change_all", "mse_change_top20"]
    by_factor = rows.groupby("factor")[cols].mean()
    by_estimator = est.groupby("estimator", sort=False)[cols].mean()
    text = (
        "# Discrimination of the training mean change times a factor (Papalexi seen, "
        f"{args.seeds} seeds; `benchmarks/discrimination_scale.py`)\n\n"
        + _table(by_factor, "factor")
        + "\n## Denoised (and noisier) estimates of the change\n\n"
        + _table(by_estimator, "estimator")
        + _headroom_table(head, float(by_factor.loc[1.0, "discrimination"]))
    )
    (args.out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
