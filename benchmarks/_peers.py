"""Peer tools in their own virtual environments, driven through the runners' contract
(``benchmarks/peers/_contract.py``): one long-lived server process per peer and worker."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np

from rnadiff.data import _splits as splits
from rnadiff.evaluation._benchmark import PeerNotRun, Predictions, Prepared, peer_inputs

ROOT = Path(__file__).resolve().parents[1]

# the method name of each peer's rows (summary.csv): what the peer is, where the tool's name
# alone does not say it
PEER_LABELS = {
    "scgen": "scgen",
    "cpa": "cpa",
    "squidiff": "squidiff",
    "cellflow": "cellflow",
    "scvi": "scvi (latent arithmetic)",
    "state": "state (hidden 128, 2 layers)",
    "gears": "gears",
}


def peer_label(name: str) -> str:
    """The method name of peer ``name``'s rows."""
    return PEER_LABELS.get(name, name)


def not_applicable(name: str, split: splits.Split) -> str | None:
    """Why peer ``name`` does not apply to ``split`` (None: it does).

    GEARS models genetic perturbations of named genes (``<gene>+ctrl``) through a GO graph of
    those genes; a target that is not a gene of the data (Kang's IFN-beta stimulation) has no
    place in it (its runner fails with "targets without GO annotations").
    """
    if name != "gears":
        return None
    key, sep = split.setup.get("perturbation_key"), split.setup.get("combination_sep", "+")
    genes = set(split.train.var_names)
    targets = {str(ev.target.get(key)) for ev in split.evaluations}
    others = sorted(t for t in targets if not set(t.split(sep)) <= genes)
    if key is None or others:
        return (
            "GEARS predicts genetic perturbations of named genes through their GO graph; "
            f"the targets {others or ['(none)']} are not genes of the data"
        )
    return None


class PeerServer:
    """A peer runner kept alive across folds (``run_<peer>.py --serve``) in one worker.

    The peer's imports (pertpy 12 s, cpa 8 s on this machine) are then paid once per worker
    instead of once per fold; every task is seeded as in a fresh process.
    """

    def __init__(self, python: Path, script: Path):
        self.log = tempfile.TemporaryFile(mode="w+")  # the tools' output, for error messages
        self.proc = subprocess.Popen(
            [str(python), str(script), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )

    def request(self, argv: list[str]) -> None:
        """Run one task; raise ``RuntimeError`` with the peer's reason when it fails."""
        self.proc.stdin.write(json.dumps(argv) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:  # the process died (killed, crashed interpreter)
            self.log.seek(0)
            tail = self.log.read().strip().splitlines() or ["no output"]
            raise RuntimeError(f"peer process exited ({self.proc.wait()}): {tail[-1]}")
        reply = json.loads(line)
        if not reply["ok"]:
            raise RuntimeError(reply["error"])


_SERVERS: dict[str, PeerServer] = {}  # per worker process: one server per peer


def peer_runner(name: str, budget: str):
    """A function running peer ``name`` in its own venv on a split (Kang-style contract)."""
    python = ROOT / ".peers" / name / "bin" / "python"
    script = ROOT / "benchmarks" / "peers" / f"run_{name}.py"
    if not python.exists() or not script.exists():
        return None

    def request(argv: list[str]) -> None:
        server = _SERVERS.get(name)
        if server is None or server.proc.poll() is not None:
            server = _SERVERS[name] = PeerServer(python, script)
        try:
            server.request(argv)
        except RuntimeError as e:
            raise RuntimeError(f"{name} failed: {e}") from None

    label = peer_label(name)

    def run(split: splits.Split, prep: Prepared) -> tuple[Predictions, dict]:
        reason = not_applicable(name, split)
        if reason is not None:
            raise PeerNotRun(reason)
        out: Predictions = {}
        timing = {"train_s": 0.0, "predict_s": 0.0, "budget": budget}
        setup = split.setup
        for ev in split.evaluations:
            with tempfile.TemporaryDirectory() as tmp:
                files = {k: Path(tmp) / f"{k}.h5ad" for k in ("train", "source", "pred")}
                for k, a in peer_inputs(split, ev, prep).items():
                    if k in files:
                        a.write_h5ad(files[k])
                request(
                    [
                        "--train",
                        str(files["train"]),
                        "--source",
                        str(files["source"]),
                        "--out",
                        str(files["pred"]),
                        "--perturbation-key",
                        setup["perturbation_key"],
                        "--control",
                        setup["control"],
                        "--target",
                        str(ev.target[setup["perturbation_key"]]),
                        "--cell-type-key",
                        setup["cell_type_key"],
                        "--seed",
                        str(split.seed),
                        "--budget",
                        budget,
                    ]
                )
                pred = ad.read_h5ad(files["pred"])
                genes = list(prep.state.genes)
                x = pred[:, genes].X
                out[ev.name] = {label: np.asarray(x.toarray() if hasattr(x, "toarray") else x)}
                info = pred.uns.get("peer", {})
                timing["train_s"] += float(info.get("train_s", 0.0))
                timing["predict_s"] += float(info.get("predict_s", 0.0))
                timing["version"] = str(info.get("version", "?"))
                timing["epochs"] = info.get("epochs")
                # the runner's check of its loss curve: "true" / "false" / "null" (too short)
                converged = json.loads(str(info.get("converged", "null")))
                timing["converged"] = None if converged is None else bool(converged)
        return out, timing

    return run


# tasks scored by cell-eval too (the Virtual Cell Challenge's metrics, in its own venv)
CELLEVAL_TASKS = ("kang_loo_celltype", "papalexi_seen")


def celleval_bundle(path: Path, split: splits.Split, prep: Prepared, predictions: Predictions):
    """Write one split's populations for ``peers/celleval_score.py --bundles`` (``.npz``, no
    pickle): every method's predicted cells per evaluation, the real cells, the control cells
    (one population shared by every evaluation) and the training cells' mean per perturbation
    (for cell-eval's cell-mean baseline; the control's named ``__control__``)."""
    evs = [ev.name for ev in split.evaluations]
    control = prep.evaluations[evs[0]]["control"]
    same = (np.array_equal(prep.evaluations[e]["control"], control) for e in evs[1:])
    if not all(same):
        raise ValueError(f"{split.task}: evaluations with different control cells")
    methods = sorted({m for preds in predictions.values() for m in preds})
    arrays = {"control": control}
    for i, e in enumerate(evs):
        arrays[f"real_{i}"] = prep.evaluations[e]["real"]
        for j, m in enumerate(methods):
            if m in predictions.get(e, {}):
                arrays[f"pred_{i}_{j}"] = np.asarray(predictions[e][m], dtype=np.float32)
    key, ctrl = split.setup["perturbation_key"], split.setup["control"]
    labels = split.train.obs[key].astype(str).to_numpy()
    perts = sorted(set(labels) - {ctrl})
    means = [prep.train[labels == p].mean(axis=0) for p in [*perts, ctrl]]
    arrays["train_means"] = np.stack(means)  # cell-eval's baseline leaves the control out
    perts.append("__control__")  # the control's name in the bundle
    meta = {
        "task": split.task,
        "fold": str(split.fold),
        "seed": int(split.seed),
        "genes": list(prep.genes),
        "evaluations": evs,
        "methods": methods,
        "train_perts": perts,
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)


def run_celleval(bundles: list[Path], csv: Path) -> None:
    """Score the bundles with cell-eval in its venv (``install.sh celleval``)."""
    python = ROOT / ".peers" / "celleval" / "bin" / "python"
    if not python.exists():
        raise SystemExit("cell-eval is not installed: bash benchmarks/peers/install.sh celleval")
    script = ROOT / "benchmarks" / "peers" / "celleval_score.py"
    cmd = [str(python), str(script), "--bundles", *map(str, bundles), "--csv", str(csv)]
    subprocess.run(cmd, check=True)
