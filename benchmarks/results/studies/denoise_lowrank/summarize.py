"""Tables of the study (``run.py``): each variant against the default network, paired over
dataset, seed and depth, per round. Writes ``summary.md`` beside this file.

Run: .venv/bin/python benchmarks/results/studies/denoise_lowrank/summarize.py
"""

from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
ROUNDS = {"1": "rows_[!r]*.csv", "2": "rows_round2_*.csv", "3": "rows_round3_*.csv"}
DEFAULT = "rnadiff (default)"


def table(rows: pd.DataFrame) -> str:
    wide = rows.pivot_table(index=["dataset", "seed", "rate", "method"], columns="metric",
                            values="value").reset_index()  # fmt: skip
    base = wide[wide.method == DEFAULT].drop(columns="method")
    paired = wide.merge(base, on=["dataset", "seed", "rate"], suffixes=("", "_default"))
    lines = [
        "| method | cases | mcv_loss | vs default (lower) | gene_gene_corr_mcv "
        "| vs default (higher) |",
        "|---|---|---|---|---|---|",
    ]
    for method, g in paired.groupby("method", sort=False):
        dl = g.mcv_loss - g.mcv_loss_default
        dg = g.gene_gene_corr_mcv - g.gene_gene_corr_mcv_default
        lines.append(
            f"| {method} | {len(g)} | {g.mcv_loss.mean():.4f} | {dl.mean():+.4f} "
            f"({int((dl < 0).sum())}/{len(g)} lower) | {g.gene_gene_corr_mcv.mean():.4f} | "
            f"{dg.mean():+.4f} ({int((dg > 0).sum())}/{len(g)} higher) |"
        )
    return "\n".join(lines)


def markdown(frame: pd.DataFrame) -> str:
    """A dataset x depth by method table of values."""
    head = ["dataset", "depth", *frame.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (dataset, rate), row in frame.iterrows():
        values = [f"{v:.4f}" for v in row]
        lines.append(f"| {dataset} | {round(rate * 100)}% | " + " | ".join(values) + " |")
    return "\n".join(lines)


def main() -> None:
    out = ["# Self-supervised denoiser: read-out rank, training, ensembles (issue 23)", ""]
    out += ["Means over every case (dataset x seed x depth) each variant ran; paired "
            "differences against the default network of the same case. `run.py` says what "
            "the datasets and variants are.", ""]  # fmt: skip
    for name, pattern in ROUNDS.items():
        files = sorted(HERE.glob(pattern))
        if not files:
            continue
        rows = pd.concat([pd.read_csv(f) for f in files])
        cases = sorted({f.stem.split("_", 1 if name == "1" else 2)[-1] for f in files})
        out += [f"## Round {name} ({', '.join(cases)})", ""]
        out += [table(rows), ""]
        per = rows[rows.metric == "gene_gene_corr_mcv"].pivot_table(
            index=["dataset", "rate"], columns="method", values="value"
        )
        out += ["Gene-gene recovery per dataset and depth (mean over seeds):", ""]
        out += [markdown(per), ""]
    (HERE / "summary.md").write_text("\n".join(out))
    print("\n".join(out))


if __name__ == "__main__":
    main()
