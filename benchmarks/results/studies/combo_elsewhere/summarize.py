"""Tables of the rows files: mean Pearson delta top-50 and R² (all genes) per world and
method, and how often rnadiff beats the additive baseline (``python summarize.py``)."""

from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent
RUNS = {
    "rows_before.jsonl": "before: whole pair effect from the other type (compose, scale 1.5)",
    "rows_interaction.jsonl": "interaction transfer: parts here + interaction from there",
    "rows_interaction_scaled.jsonl": "interaction transfer with the parts' effect scales",
    "rows_fixed_whole.jsonl": "dosed tokens fixed; whole pair effect from the other type",
    "rows_fixed_interaction.jsonl": "dosed tokens fixed; interaction transfer (adopted)",
}
for name, what in RUNS.items():
    d = pd.read_json(HERE / name, lines=True)
    table = d.groupby(["world", "method"])[["pearson_delta_top50", "r2_mean_all"]].mean()
    wins = d.pivot_table(index=["world", "type", "pair"], columns="method",
                         values="pearson_delta_top50")  # fmt: skip
    print(f"## {what} ({name})\n")
    print(table.round(3).to_string())
    better = int((wins["rnadiff"] > wins["additive"]).sum())
    print(f"\nrnadiff above additive (Pearson delta): {better} of {len(wins)} pairs\n")
