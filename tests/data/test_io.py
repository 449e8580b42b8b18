"""Output files: written atomically, marked as rnadiff's, and never over a user's file."""

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from rnadiff._errors import InputError
from rnadiff.data import _io


@pytest.fixture(autouse=True)
def no_inputs(monkeypatch):
    monkeypatch.setattr(_io, "_INPUTS", set())


def test_h5ad_png_and_csv_written_by_rnadiff_are_recognised_and_others_are_not(tmp_path):
    cells = ad.AnnData(np.ones((2, 3), dtype=np.float32))
    ours, theirs = tmp_path / "ours.h5ad", tmp_path / "theirs.h5ad"
    _io.write_h5ad(cells, ours)
    cells.write_h5ad(theirs)
    assert _io.written_by_rnadiff(ours) and not _io.written_by_rnadiff(theirs)
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    _io.save_figure(fig, tmp_path / "ours.png")
    fig.savefig(tmp_path / "theirs.png")
    plt.close(fig)
    assert _io.written_by_rnadiff(tmp_path / "ours.png")
    assert not _io.written_by_rnadiff(tmp_path / "theirs.png")
    table = pd.DataFrame({"a": [1], "b": [2]})
    _io.write_csv(table, tmp_path / "t.csv", index=False)
    assert _io.written_by_rnadiff(tmp_path / "t.csv", header="a,b")
    assert not _io.written_by_rnadiff(tmp_path / "t.csv", header="a,c")
    (tmp_path / "broken.h5ad").write_text("not hdf5")
    assert not _io.written_by_rnadiff(tmp_path / "broken.h5ad")


def test_check_file_replaceable_refuses_inputs_and_files_of_the_user(tmp_path):
    cells = ad.AnnData(np.ones((2, 3), dtype=np.float32))
    ours, theirs = tmp_path / "ours.h5ad", tmp_path / "theirs.h5ad"
    _io.write_h5ad(cells, ours)
    cells.write_h5ad(theirs)
    _io.check_file_replaceable(tmp_path / "new.h5ad", "--out")  # absent: fine
    _io.check_file_replaceable(ours, "--out")  # ours: fine
    with pytest.raises(InputError, match=r"--out .* not written by rnadiff"):
        _io.check_file_replaceable(theirs, "--out")
    _io.protect(ours)
    with pytest.raises(InputError, match="is an input of this command"):
        _io.check_file_replaceable(ours, "--out")
    # a CSV: only an earlier table of the same columns is replaced
    notes = tmp_path / "notes.csv"
    notes.write_text("my,own\n1,2\n")
    _io.check_file_replaceable(notes, "--out")  # columns unknown yet: checked when written
    with pytest.raises(InputError, match="not written by rnadiff"):
        _io.write_csv(pd.DataFrame({"x": [1]}), notes, what="--out", index=False)
    assert notes.read_text() == "my,own\n1,2\n"
    _io.write_csv(pd.DataFrame({"my": [3], "own": [4]}), notes, what="--out", index=False)
    assert notes.read_text().splitlines() == ["my,own", "3,4"]
