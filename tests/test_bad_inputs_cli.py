"""Bad input through the command line: every case ends with exit code 2, one ``error:`` line
(no traceback), and the input files exactly as they were (same SHA-256).

The matrix covers malformed data, data of the wrong kind, unknown labels and genes, damaged
or foreign checkpoints (and a pickle payload), unsafe output targets and absurd settings.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from rnadiff import ModelConfig, NetworkConfig, PreprocessConfig, RNADiffusion, TrainConfig
from rnadiff.cli import main
from rnadiff.training._checkpoint import MANIFEST

pytestmark = pytest.mark.usefixtures("one_thread")
SETUP = ["--perturbation-key", "group_id", "--control", "ctrl", "--cell-type-key", "cluster_id"]
TINY = ["--width", "16", "--depth", "1", "--max-steps", "2", "--quiet", "--threads", "1"]


def _sha(path: Path) -> str:
    if path.is_dir():
        return "".join(_sha(p) for p in sorted(path.iterdir()))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def root(tmp_path_factory, _kang_small_session) -> Path:
    """A folder of inputs: counts, a trained model, and the files each case corrupts."""
    root = tmp_path_factory.mktemp("bad")
    cells = _kang_small_session[::2].copy()
    cells.write_h5ad(root / "counts.h5ad")
    log = cells.copy()
    log.X = sp.csr_matrix(log.layers["logcounts"])
    del log.layers["logcounts"]
    log.write_h5ad(root / "lognorm.h5ad")
    adata = cells.copy()
    RNADiffusion.setup_anndata(
        adata, perturbation_key="group_id", control="ctrl", cell_type_key="cluster_id"
    )
    config = ModelConfig(
        network=NetworkConfig(width=16, depth=1, emb_dim=8),
        preprocess=PreprocessConfig(n_top_genes=40),
    )
    model = RNADiffusion(adata, config=config)
    model.train(config=TrainConfig(max_steps=2, calibration_cells=0, spread_cells=0))
    model.save(root / "model")
    wide = RNADiffusion(adata, config=ModelConfig(network=NetworkConfig(width=24, depth=1)))
    wide.save(root / "wide")
    return root


def _variant(root: Path, name: str, change) -> Path:
    """A copy of the counts file changed by ``change(adata)``."""
    adata = ad.read_h5ad(root / "counts.h5ad")
    changed = change(adata)
    adata = adata if changed is None else changed  # an AnnData of 0 cells is falsy
    path = root / f"{name}.h5ad"
    adata.write_h5ad(path)
    return path


def _damaged_model(root: Path, name: str, damage) -> Path:
    """A copy of the model folder damaged by ``damage(folder)``."""
    import shutil

    folder = root / name
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(root / "model", folder)
    damage(folder)
    return folder


def _rehash(folder: Path) -> None:
    """Bring the manifest up to date (a file edited by a tool that knows the format)."""
    manifest = json.loads((folder / MANIFEST).read_text())
    for name in manifest["files"]:
        manifest["files"][name] = _sha(folder / name)
    (folder / MANIFEST).write_text(json.dumps(manifest))


def _set(adata, **values):
    for key, value in values.items():
        setattr(adata, key, value)


def _x(adata, fn):
    x = adata.X.toarray().astype(np.float64)
    fn(x)
    adata.X = sp.csr_matrix(x)


def _edit_json(folder: Path, fn) -> None:
    meta = json.loads((folder / "config.json").read_text())
    fn(meta)
    (folder / "config.json").write_text(json.dumps(meta))


def _tpm(adata):
    x = adata.X.toarray()
    adata.X = np.round(x / x.sum(1, keepdims=True) * 1e6)


def _log_intensities(adata):
    x = adata.X.toarray()
    adata.X = np.log2(1 + 50 * x**1.3).astype(np.float32)


def _no_genes(adata):
    return adata[:, :0].copy()


def _dup_genes(adata):
    adata.var_names = ["G0", "G0", *adata.var_names[2:]]


def _dup_cells(adata):
    adata.obs_names = ["c0", "c0", *adata.obs_names[2:]]


def _nan_label(adata):
    labels = adata.obs["group_id"].astype(object)
    labels.iloc[3] = np.nan
    adata.obs["group_id"] = labels


def _swap_weights(root):
    def damage(folder):
        (folder / "weights.safetensors").write_bytes(
            (root / "wide/weights.safetensors").read_bytes()
        )
        _rehash(folder)

    return damage


# (name, args builder(root) -> (argv, input paths), words the error must hold)
CASES = {
    "missing key": (
        lambda r: (
            ["train", "--data", r / "counts.h5ad", "--out", r / "o1", "--perturbation-key", "nope"],
            [],
        ),
        ["'nope'", "not found"],
    ),
    "unknown control": (
        lambda r: (
            [
                "train",
                "--data",
                r / "counts.h5ad",
                "--out",
                r / "o2",
                "--perturbation-key",
                "group_id",
                "--control",
                "DMSO",
            ],
            [],
        ),
        ["control value 'DMSO'"],
    ),
    "NaN values": (
        lambda r: (
            [
                "train",
                "--data",
                _variant(r, "nan", lambda a: _x(a, lambda x: x.__setitem__((0, 0), np.nan))),
                "--out",
                r / "o3",
                *SETUP,
            ],
            [],
        ),
        ["NaN or infinite"],
    ),
    "infinite values": (
        lambda r: (
            [
                "train",
                "--data",
                _variant(r, "inf", lambda a: _x(a, lambda x: x.__setitem__((0, 0), np.inf))),
                "--out",
                r / "o4",
                *SETUP,
            ],
            [],
        ),
        ["NaN or infinite"],
    ),
    "negative values": (
        lambda r: (
            [
                "train",
                "--data",
                _variant(r, "neg", lambda a: _x(a, lambda x: x.__setitem__((0, 0), -3))),
                "--out",
                r / "o5",
                *SETUP,
            ],
            [],
        ),
        ["negative values"],
    ),
    "non-integer counts declared": (
        lambda r: (
            ["train", "--data", r / "lognorm.h5ad", "--out", r / "o6", *SETUP, "--input", "counts"],
            [],
        ),
        ["--input counts", "non-integer"],
    ),
    "rounded TPM": (
        lambda r: (["train", "--data", _variant(r, "tpm", _tpm), "--out", r / "o7", *SETUP], []),
        ["--input counts or --input normalized"],
    ),
    "log of unknown base": (
        lambda r: (
            ["train", "--data", _variant(r, "logint", _log_intensities), "--out", r / "o8", *SETUP],
            [],
        ),
        ["--input lognorm", "--input log2"],
    ),
    "log data for a counts model": (
        lambda r: (
            [
                "predict",
                "--model",
                r / "model",
                "--source",
                r / "lognorm.h5ad",
                "--perturbation",
                "stim",
                "--out",
                r / "p.h5ad",
            ],
            [],
        ),
        ["looks log-normalized", "--layer"],
    ),
    "zero cells": (
        lambda r: (
            [
                "train",
                "--data",
                _variant(r, "empty", lambda a: a[:0].copy()),
                "--out",
                r / "o9",
                *SETUP,
            ],
            [],
        ),
        ["empty"],
    ),
    "zero genes": (
        lambda r: (
            ["train", "--data", _variant(r, "nogenes", _no_genes), "--out", r / "o10", *SETUP],
            [],
        ),
        ["empty"],
    ),
    "duplicate gene names": (
        lambda r: (
            ["train", "--data", _variant(r, "dupg", _dup_genes), "--out", r / "o11", *SETUP],
            [],
        ),
        ["gene names", "not unique"],
    ),
    "duplicate cell names": (
        lambda r: (
            [
                "predict",
                "--model",
                r / "model",
                "--source",
                _variant(r, "dupc", _dup_cells),
                "--perturbation",
                "stim",
                "--out",
                r / "p.h5ad",
            ],
            [],
        ),
        ["cell names", "not unique"],
    ),
    "NaN labels": (
        lambda r: (
            ["train", "--data", _variant(r, "nanlab", _nan_label), "--out", r / "o12", *SETUP],
            [],
        ),
        ["'group_id'", "missing"],
    ),
    "unknown perturbation": (
        lambda r: (
            [
                "generate",
                "--model",
                r / "model",
                "--condition",
                "group_id=aspirin",
                "--out",
                r / "g.h5ad",
            ],
            [],
        ),
        ["unknown perturbation 'aspirin'"],
    ),
    "unknown cell type": (
        lambda r: (
            [
                "generate",
                "--model",
                r / "model",
                "--condition",
                "cluster_id=Neurons",
                "--out",
                r / "g.h5ad",
            ],
            [],
        ),
        ["unknown value 'Neurons'"],
    ),
    "unknown gene": (
        lambda r: (["rank", "--model", r / "model", "--up", "NOTAGENE", "--quiet"], []),
        ["NOTAGENE"],
    ),
    "gene mismatch": (
        lambda r: (
            [
                "predict",
                "--model",
                r / "model",
                "--source",
                _variant(r, "fewgenes", lambda a: a[:, :20].copy()),
                "--perturbation",
                "stim",
                "--out",
                r / "p.h5ad",
            ],
            [],
        ),
        ["genes do not match"],
    ),
    "edited checkpoint": (
        lambda r: (
            [
                "generate",
                "--model",
                _damaged_model(r, "edited", lambda f: _edit_json(f, lambda m: m.update(step=99))),
                "--condition",
                "group_id=stim",
                "--out",
                r / "g.h5ad",
            ],
            [],
        ),
        ["config.json", "corrupt or was edited"],
    ),
    "truncated weights": (
        lambda r: (
            [
                "generate",
                "--model",
                _damaged_model(
                    r,
                    "trunc",
                    lambda f: (f / "weights.safetensors").write_bytes(
                        (f / "weights.safetensors").read_bytes()[:200]
                    ),
                ),
                "--condition",
                "group_id=stim",
                "--out",
                r / "g.h5ad",
            ],
            [],
        ),
        ["weights.safetensors", "corrupt"],
    ),
    "key removed from the JSON": (
        lambda r: (
            [
                "generate",
                "--model",
                _damaged_model(
                    r, "nokey", lambda f: (_edit_json(f, lambda m: m.pop("registry")), _rehash(f))
                ),
                "--condition",
                "group_id=stim",
                "--out",
                r / "g.h5ad",
            ],
            [],
        ),
        ["config.json", "lacks 'registry'"],
    ),
    "weights of another width": (
        lambda r: (
            [
                "generate",
                "--model",
                _damaged_model(r, "width", _swap_weights(r)),
                "--condition",
                "group_id=stim",
                "--out",
                r / "g.h5ad",
            ],
            [],
        ),
        ["weights.safetensors", "does not fit"],
    ),
    "foreign checkpoint": (
        lambda r: (
            [
                "generate",
                "--model",
                _damaged_model(
                    r,
                    "foreign",
                    lambda f: (
                        (f / MANIFEST).unlink(),
                        (f / "config.json").write_text(json.dumps({"format": "keras"})),
                    ),
                ),
                "--condition",
                "group_id=stim",
                "--out",
                r / "g.h5ad",
            ],
            [],
        ),
        ["not an rnadiff checkpoint"],
    ),
    "pickle payload": (
        lambda r: (
            [
                "generate",
                "--model",
                _damaged_model(
                    r,
                    "pickled",
                    lambda f: (
                        (f / "weights.safetensors").write_bytes(pickle.dumps({"w": [1, 2]})),
                        _rehash(f),
                    ),
                ),
                "--condition",
                "group_id=stim",
                "--out",
                r / "g.h5ad",
            ],
            [],
        ),
        ["weights.safetensors", "not a readable safetensors file"],
    ),
    "model folder missing": (
        lambda r: (
            [
                "generate",
                "--model",
                r / "nowhere",
                "--condition",
                "group_id=stim",
                "--out",
                r / "g.h5ad",
            ],
            [],
        ),
        ["does not exist"],
    ),
    "out is the current folder": (
        lambda r: (["train", "--data", r / "counts.h5ad", "--out", ".", *SETUP], []),
        ["current folder"],
    ),
    "out holds the input": (
        lambda r: (["train", "--data", r / "counts.h5ad", "--out", r, *SETUP], []),
        ["would hold the input file"],
    ),
    "out is a file of the user's": (
        lambda r: (
            [
                "generate",
                "--model",
                r / "model",
                "--condition",
                "group_id=stim",
                "--out",
                r / "model",
            ],
            [],
        ),
        [".h5ad"],
    ),
    "huge guidance": (
        lambda r: (
            [
                "generate",
                "--model",
                r / "model",
                "--condition",
                "group_id=stim",
                "--guidance",
                "1e30",
                "--out",
                r / "g.h5ad",
            ],
            [],
        ),
        ["--guidance", "out of range"],
    ),
    "no cells after --where": (
        lambda r: (
            [
                "predict",
                "--model",
                r / "model",
                "--source",
                r / "counts.h5ad",
                "--where",
                "group_id=nothing",
                "--perturbation",
                "stim",
                "--out",
                r / "p.h5ad",
            ],
            [],
        ),
        ["no cells"],
    ),
    "zero cells to generate": (
        lambda r: (
            [
                "generate",
                "--model",
                r / "model",
                "--condition",
                "group_id=stim",
                "--n",
                "0",
                "--out",
                r / "g.h5ad",
            ],
            [],
        ),
        ["--n must be at least 1"],
    ),
    "zero cells to denoise": (
        lambda r: (
            [
                "denoise",
                "--model",
                r / "model",
                "--data",
                _variant(r, "none", lambda a: a[:0].copy()),
                "--out",
                r / "d.h5ad",
            ],
            [],
        ),
        ["no cells"],
    ),
    "zero cells to evaluate": (
        lambda r: (
            [
                "evaluate",
                "--pred",
                _variant(r, "nopred", lambda a: a[:0].copy()),
                "--real",
                r / "counts.h5ad",
            ],
            [],
        ),
        ["no cells"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_line_and_changes_nothing(case, root, monkeypatch, capsys):
    build, words = CASES[case]
    argv, _ = build(root)
    inputs = [Path(a) for a in argv if isinstance(a, Path) and Path(a).exists()]
    inputs += [root / "counts.h5ad", root / "model"]
    before = {p: _sha(p) for p in inputs}
    monkeypatch.setattr(sys, "argv", ["rnadiff", *[str(a) for a in argv]])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("rnadiff:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert {p: _sha(p) for p in inputs} == before  # nothing of the user's changed


@pytest.mark.parametrize("change", [_dup_genes, _dup_cells])
def test_duplicate_names_are_said_once_by_rnadiff_not_by_anndata(root, change):
    import warnings

    from rnadiff.cli._common import _read

    path = _variant(root, f"dup_{change.__name__}", change)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        adata = _read(path)
    assert not any("not unique" in str(w.message) for w in caught), [str(w.message) for w in caught]
    # the names are read as they are: rnadiff's checks then refuse them in one error line
    assert not (adata.var_names.is_unique and adata.obs_names.is_unique)
