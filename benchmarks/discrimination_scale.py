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

    RNADIFF_DATA_DIR=../shared/data .venv/bin/python benchmarks/discrimination_scale.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from rnadiff import datasets
from rnadiff.data import splits
from rnadiff.evaluation.benchmark import BenchConfig, prepare, target_gene_indices
from rnadiff.evaluation.metrics import discrimination_score

OUT = Path("benchmarks/results/discrimination_scale")
FACTORS = (0.5, 0.7, 1.0, 1.3, 1.6, 2.0, 3.0)


def _seed_data(data, seed: int):
    """Held-out control and real cells, the training change and its standard error."""
    split = next(splits.papalexi_seen(data, seed=seed))
    prep = prepare(split, BenchConfig())
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


def seed_rows(data, seed: int, factors=FACTORS) -> tuple[list[dict], list[dict]]:
    names, real, held_control, shift, se2, truth, exclude = _seed_data(data, seed)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = splits.papalexi_clean(datasets.load("papalexi2021"))
    scaled, denoised = [], []
    for s in range(args.seeds):
        a, b = seed_rows(data, s)
        scaled += a
        denoised += b
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
    )
    (args.out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
