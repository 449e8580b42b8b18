"""Reports of a benchmark run: summary tables (Markdown), paired comparisons and plots."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from rnadiff.data import _splits as splits
from rnadiff.data._io import write_csv, write_text
from rnadiff.evaluation._benchmark import (
    Predictions,
    Prepared,
    paired_comparison,
    summarize,
)
from rnadiff.evaluation._metrics import top_de_genes
from rnadiff.evaluation._plots import plot_fold_bars, plot_mean_change, plot_umap

HEADLINE = [
    "pearson_delta_top100",
    "r2_mean_top100",
    "r2_mean_all",
    "edistance",
    "mmd",
    "knn_auc",
    "discrimination",
    "discrimination_all_genes",
    "top1",
    "top5",
    "mrr",
    "rank",
    "success_rate",
    "realism_ratio",
    "pearson_delta",
    # denoising and counts (benchmarks/_denoise_tasks.py)
    "mcv_loss",
    "cell_corr",
    "gene_corr",
    "gene_gene_corr",
    "gene_gene_corr_mcv",
    "knn_accuracy",
    "ari",
    "library_ks",
    "zero_fraction_gene_corr",
    # drugs, doses, combinations and fate (benchmarks/_drug_tasks.py)
    "pearson_delta_top50",
    "composition_error",
    "composition_error_truth",
    "cv_accuracy",
]


def cpu_info() -> dict:
    """The CPU the run had (its speed varies by up to 1.7x between machine hours)."""
    info: dict = {"cores": os.cpu_count()}
    try:
        block = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return info
    for line in block.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "cpu family", "model", "stepping", "cpu MHz"):
            info[key.strip()] = value.strip()
    return info


def plots_for(out: Path):
    """Plots of the first seed's predictions: UMAP and predicted vs real mean change."""

    def on_predictions(split: splits.Split, prep: Prepared, predictions: Predictions) -> None:
        if split.seed != 0 or split.task not in ("kang_loo_celltype", "hsmm_time"):
            return
        for ev in split.evaluations:
            pops, preds = prep.evaluations[ev.name], predictions.get(ev.name, {})
            methods = {m: x for m, x in preds.items() if m != "baseline: control"}
            name = f"{split.task}_{str(split.fold).replace(' ', '_').replace('+', '')}"
            plot_umap(
                {"real target": pops["real"], "real control": pops["control"]},
                methods,
                out / f"umap_{name}.png",
                title=f"{split.task}: {ev.name} (seed 0)",
            )
            control = pops["control"].mean(axis=0)
            plot_mean_change(
                {m: x.mean(axis=0) - control for m, x in methods.items()},
                pops["real"].mean(axis=0) - control,
                out / f"mean_change_{name}.png",
                highlight=top_de_genes(pops["real"], pops["control"], 100),
                title=f"{split.task}: {ev.name} (seed 0)",
            )

    return on_predictions


# the method whose paired comparisons summary.md shows, per task (paired.csv has them all)
PRIMARY = (
    "rnadiff (counterfactual)",
    "rnadiff (combined)",
    "rnadiff design (markers)",
    "rnadiff (self-supervised)",
)


def markdown(
    summary: pd.DataFrame, timings: pd.DataFrame | None = None, paired: pd.DataFrame | None = None
) -> str:
    """Mean ± sd per method and headline metric, per task; the paired comparison of the task's
    primary rnadiff method with every other method; notes of methods that could not run and
    training / prediction time per method."""
    lines = []
    for task, frame in summary.groupby("task"):
        frame = frame[frame.metric.isin(HEADLINE)]
        if frame.empty:  # a task without headline metrics: its rows are in summary.csv
            continue
        cells = frame.assign(
            v=frame["mean"].map("{:.3f}".format) + " ± " + frame["sd"].map("{:.3f}".format)
        )
        table = cells.pivot(index="method", columns="metric", values="v")
        table = table[[m for m in HEADLINE if m in table.columns]].fillna("n/a")
        lines += [
            f"### {task}",
            "",
            "| method | " + " | ".join(table.columns) + " |",
            "|---" * (len(table.columns) + 1) + "|",
        ]
        lines += [f"| {m} | " + " | ".join(row) + " |" for m, row in table.iterrows()]
        lines.append("")
        if paired is not None:
            lines += _paired_lines(paired[paired.task == task])
        if timings is not None and "task" in timings:
            lines += _notes(timings[timings.task == task])
    return "\n".join(lines)


def _paired_lines(paired: pd.DataFrame) -> list[str]:
    """Advantage of the primary method over each other one: mean ± se (better/equal/worse)."""
    primary = [m for m in PRIMARY if m in set(paired.method)]
    if not primary:
        return []
    frame = paired[(paired.method == primary[0]) & paired.metric.isin(HEADLINE)]
    if frame.empty:
        return []
    cells = frame.assign(
        v=frame["mean"].map("{:+.3f}".format)
        + " ± "
        + frame["se"].map("{:.3f}".format)
        + " ("
        + frame[["better", "equal", "worse"]].astype(str).agg("/".join, axis=1)
        + ", "
        + frame["verdict"]
        + ")"
    )
    table = cells.pivot(index="reference", columns="metric", values="v")
    table = table[[m for m in HEADLINE if m in table.columns]].fillna("n/a")
    return [
        f"Paired advantage of {primary[0]} (positive: better; mean ± se over pairs of fold, "
        "seed and evaluation; better/equal/worse pairs; verdict at 2 se):",
        "",
        "| versus | " + " | ".join(table.columns) + " |",
        "|---" * (len(table.columns) + 1) + "|",
        *[f"| {m} | " + " | ".join(row) + " |" for m, row in table.iterrows()],
        "",
    ]


def method_info(times: pd.DataFrame) -> pd.DataFrame:
    """Per task and method that has timings (rnadiff, peers): ``version``, ``budget``,
    ``epochs``, mean ``train_s`` and ``predict_s`` per split, ``converged`` (splits whose loss
    curve passed the runner's convergence check, of those checked: ``"3/5"``) and ``note``
    (reasons a method did not run, errors)."""
    columns = ["task", "method", "version", "budget", "epochs", "train_s", "predict_s"]
    columns += ["converged", "note"]
    if times is None or times.empty or "task" not in times:
        return pd.DataFrame(columns=columns)
    out = []
    for (task, method), frame in times.groupby(["task", "method"], sort=True):
        if str(method).startswith("rnadiff:"):  # design / ranking extras: no model of their own
            continue

        def joined(column: str, frame=frame) -> str:
            if column not in frame:
                return ""
            return "; ".join(sorted({str(v) for v in frame[column].dropna() if str(v) != ""}))

        ran = frame[frame.get("train_s", pd.Series(index=frame.index, dtype=float)).notna()]
        checked = frame["converged"].dropna() if "converged" in frame else pd.Series(dtype=object)
        checked = checked[checked.astype(str).isin(["True", "False", "true", "false"])]
        yes = int(checked.astype(str).str.lower().eq("true").sum())
        notes = [joined("note"), joined("error")]
        out.append(
            {
                "task": task,
                "method": method,
                "version": joined("version"),
                "budget": joined("budget"),
                "epochs": joined("epochs"),
                "train_s": ran["train_s"].mean() if len(ran) else float("nan"),
                "predict_s": ran["predict_s"].mean() if len(ran) else float("nan"),
                "converged": f"{yes}/{len(checked)}" if len(checked) else "",
                "note": "; ".join(n for n in notes if n),
            }
        )
    return pd.DataFrame(out, columns=columns)


def with_method_info(summary: pd.DataFrame, times: pd.DataFrame | None) -> pd.DataFrame:
    """``summary`` with :func:`method_info`'s columns, and one row ``metric = "not run"`` for
    each method with timings but no scores (its ``note`` says why)."""
    info = method_info(times)
    merged = summary.merge(info, on=["task", "method"], how="left")
    scored = set(zip(summary.task, summary.method, strict=True))
    missing = info[[(t, m) not in scored for t, m in zip(info.task, info.method, strict=True)]]
    if len(missing):
        extra = missing.assign(metric="not run", mean=float("nan"), sd=float("nan"), n=0)
        merged = pd.concat([merged, extra[merged.columns]], ignore_index=True)
    return merged


# cell-eval's metrics in the Virtual Cell Challenge's names: DES (differential expression
# score), PDS (perturbation discrimination score), MAE; and its Pearson delta
VCC_METRICS = {
    "overlap_at_N": "DES",
    "discrimination_score_l1": "PDS",
    "mae": "MAE",
    "pearson_delta": "pearson_delta",
}


def celleval_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sd over splits of cell-eval's metrics (``celleval.csv``) and of the scores scaled
    against its cell-mean baseline; ``vcc_score`` is the challenge's overall score, the mean
    of the scaled DES, PDS and MAE of a split (each clipped at 0 by cell-eval; a scaled score
    that is undefined, PDS with one perturbation, is left out)."""
    keep = [
        *VCC_METRICS,
        *(f"{m}_scaled" for m in ("overlap_at_N", "discrimination_score_l1", "mae")),
    ]
    frame = rows[rows.metric.isin(keep)].copy()
    scaled = frame[frame.metric.str.endswith("_scaled")]
    # the defined ones (PDS scaled is undefined with one perturbation per split)
    vcc = scaled.dropna(subset=["value"]).groupby(["task", "fold", "seed", "method"])
    vcc = vcc["value"].mean().reset_index()
    frame = pd.concat([frame, vcc.assign(metric="vcc_score")], ignore_index=True)
    names = {**VCC_METRICS, **{f"{k}_scaled": f"{v} scaled" for k, v in VCC_METRICS.items()}}
    frame["metric"] = frame.metric.map(lambda m: names.get(m, m))
    return summarize(frame.assign(evaluation="all"))


def _celleval_lines(summary: pd.DataFrame) -> list[str]:
    lines = []
    order = ["DES", "PDS", "MAE", "pearson_delta", "DES scaled", "PDS scaled", "MAE scaled"]
    order.append("vcc_score")
    for task, frame in summary.groupby("task"):
        cells = frame.assign(
            v=frame["mean"].map("{:.3f}".format) + " ± " + frame["sd"].map("{:.3f}".format)
        )
        table = cells.pivot(index="method", columns="metric", values="v")
        table = table[[m for m in order if m in table.columns]].fillna("n/a")
        table = table.replace(r"^nan ± .*", "n/a", regex=True)
        if "vcc_score" in frame.metric.values:
            rank = frame[frame.metric == "vcc_score"].set_index("method")["mean"]
            table = table.loc[rank.reindex(table.index).sort_values(ascending=False).index]
        lines += [
            f"### {task}: cell-eval (Virtual Cell Challenge metrics)",
            "",
            "Computed by cell-eval itself (`peers/celleval_score.py`, profile `minimal`); "
            "scaled against its cell-mean baseline as the challenge does (`score_agg_metrics`: "
            "(x - base) / (1 - base) for DES and PDS, 1 - x / base for MAE, clipped at 0); "
            "`vcc_score` = mean of the three scaled scores. Mean ± sd over splits. "
            + (
                "One perturbation per split: PDS is trivially 1, its scaled score undefined "
                "(n/a), and `vcc_score` the mean of scaled DES and MAE."
                if task.startswith("kang")
                else ""
            ),
            "",
            "| method | " + " | ".join(table.columns) + " |",
            "|---" * (len(table.columns) + 1) + "|",
            *[f"| {m} | " + " | ".join(row) + " |" for m, row in table.iterrows()],
            "",
        ]
    return lines


def write_reports(rows: pd.DataFrame, times: pd.DataFrame, out: Path) -> str:
    """``summary.csv`` (with each method's version, budget, times and convergence,
    :func:`with_method_info`), ``paired.csv``, ``summary.md`` and ``kang_folds.png`` from the
    rows, and ``celleval_summary.csv`` with its section of ``summary.md`` when ``out`` has a
    ``celleval.csv``; returns the markdown."""
    summary = summarize(rows)
    write_csv(with_method_info(summary, times), out / "summary.csv", index=False)
    paired = paired_comparison(rows)
    write_csv(paired, out / "paired.csv", index=False)
    text = markdown(summary, times, paired)
    if (out / "celleval.csv").is_file():  # run.py --celleval
        ce = celleval_summary(pd.read_csv(out / "celleval.csv"))
        write_csv(ce, out / "celleval_summary.csv", index=False)
        text += "\n" + "\n".join(_celleval_lines(ce))
    write_text(text, out / "summary.md")
    if "kang_loo_celltype" in set(rows.task):
        plot_fold_bars(
            rows[rows.task == "kang_loo_celltype"],
            out / "kang_folds.png",
            metrics=["pearson_delta_top100", "r2_mean_top100", "edistance"],
        )
    return text


def _notes(times: pd.DataFrame) -> list[str]:
    info = method_info(times)
    info = info[~info.method.str.startswith("rnadiff")]
    out = []
    if len(info):  # peers: what ran, at which budget, whether it converged
        out += [
            "| method | version | budget | epochs / steps | train s | predict s | converged "
            "| note |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in info.itertuples():
            times_ = [f"{v:.0f}" if v == v else "" for v in (r.train_s,)] + [
                f"{r.predict_s:.1f}" if r.predict_s == r.predict_s else ""
            ]
            out.append(
                f"| {r.method} | {r.version} | {r.budget} | {r.epochs} | {times_[0]} | "
                f"{times_[1]} | {r.converged} | {r.note} |"
            )
        out.append("")
    for column in ("note", "error"):
        if column in times:
            for (method, text), group in times.dropna(subset=[column]).groupby(["method", column]):
                out.append(f"- {method}: {text} ({len(group)} splits)")
    ran = times[times.get("train_s", pd.Series(dtype=float)).fillna(0) > 0]
    if len(ran):
        per = ran.groupby("method")[["train_s", "predict_s"]].mean()
        for method, row in per.iterrows():
            out.append(
                f"- time, {method}: train {row.train_s:.0f} s, predict {row.predict_s:.1f} s "
                "per split (mean)"
            )
    return [*out, ""] if out else []
