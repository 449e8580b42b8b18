"""Tests of the dataset registry (rnadiff.data._datasets); no internet access needed."""

from __future__ import annotations

import functools
import hashlib
import http.server
import logging
import os
import threading
from pathlib import Path

import pytest

from rnadiff._errors import DatasetError
from rnadiff.data._datasets import REGISTRY, DatasetInfo, fetch, list_datasets, load, load_smiles

_ENV_DATA_DIR = os.environ.get("RNADIFF_DATA_DIR")
REAL_DATA_DIR = Path(_ENV_DATA_DIR) if _ENV_DATA_DIR else Path(__file__).parents[3] / "shared/data"

CONTENT = b"toy dataset content\n" * 100
TOY_SHA = hashlib.sha256(CONTENT).hexdigest()
TOY_FILE = "toy_file.bin"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No user configuration leaks in; the default cache lives under a temporary HOME."""
    for var in ("RNADIFF_DATA_DIR", "RNADIFF_CACHE_DIR", "RNADIFF_DATA_URL"):
        monkeypatch.delenv(var, raising=False)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def toy(monkeypatch):
    """Register a small fake dataset 'toy' with a pinned checksum and no URL."""

    def register(sha256: str | None = TOY_SHA, url: str | None = None) -> DatasetInfo:
        info = DatasetInfo("toy", TOY_FILE, sha256, url, "toy data", "made up", "CC0")
        monkeypatch.setitem(REGISTRY, "toy", info)
        return info

    register()
    return register


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Serve a temporary folder on 127.0.0.1 and point RNADIFF_DATA_URL at it."""
    root = tmp_path / "served"
    root.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("RNADIFF_DATA_URL", f"http://127.0.0.1:{httpd.server_address[1]}/mirror/")
    (root / "mirror").mkdir()
    try:
        yield root / "mirror", requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _write(folder: Path, content: bytes = CONTENT) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / TOY_FILE
    file.write_bytes(content)
    return file


def test_explicit_path_is_returned(toy, tmp_path):
    file = _write(tmp_path / "anywhere")
    assert fetch("toy", path=file, verify=True) == file


def test_missing_explicit_path_names_it(toy, tmp_path):
    missing = tmp_path / "nope.h5ad"
    with pytest.raises(DatasetError, match=r"nope\.h5ad"):
        fetch("toy", path=missing)


def test_data_dir_from_env(toy, tmp_path, monkeypatch):
    file = _write(tmp_path / "env_dir")
    monkeypatch.setenv("RNADIFF_DATA_DIR", str(tmp_path / "env_dir"))
    assert fetch("toy", download=False) == file


def test_explicit_data_dir_beats_env(toy, tmp_path, monkeypatch):
    _write(tmp_path / "env_dir")
    arg_file = _write(tmp_path / "arg_dir")
    monkeypatch.setenv("RNADIFF_DATA_DIR", str(tmp_path / "env_dir"))
    assert fetch("toy", data_dir=tmp_path / "arg_dir", download=False) == arg_file


def test_data_dir_beats_cache(toy, tmp_path):
    _write(tmp_path / "cache")
    data_file = _write(tmp_path / "data")
    got = fetch("toy", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", download=False)
    assert got == data_file


def test_cache_dir_argument_env_and_default(toy, tmp_path, monkeypatch):
    arg_file = _write(tmp_path / "cache_arg")
    assert fetch("toy", cache_dir=tmp_path / "cache_arg", download=False) == arg_file
    env_file = _write(tmp_path / "cache_env")
    monkeypatch.setenv("RNADIFF_CACHE_DIR", str(tmp_path / "cache_env"))
    assert fetch("toy", download=False) == env_file
    monkeypatch.delenv("RNADIFF_CACHE_DIR")
    default_file = _write(tmp_path / "home" / ".cache" / "rnadiff")
    assert fetch("toy", download=False) == default_file


def test_download_from_mirror_lands_in_cache_once(toy, server, tmp_path):
    served, requests = server
    _write(served)
    cache = tmp_path / "cache"
    got = fetch("toy", cache_dir=cache, progress=True)
    assert got == cache / TOY_FILE
    assert got.read_bytes() == CONTENT
    assert requests == [f"/mirror/{TOY_FILE}"]
    assert sorted(p.name for p in cache.iterdir()) == [TOY_FILE]  # no temp file left
    assert fetch("toy", cache_dir=cache, verify=True) == got
    assert len(requests) == 1  # the second fetch used the cache


def test_download_checksum_mismatch_leaves_nothing(toy, server, tmp_path):
    served, requests = server
    _write(served, b"tampered content")
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match="expected sha256") as err:
        fetch("toy", cache_dir=cache, progress=False)
    assert TOY_SHA in str(err.value)
    assert hashlib.sha256(b"tampered content").hexdigest() in str(err.value)
    assert len(requests) == 1
    assert list(cache.iterdir()) == []


def test_download_404_is_a_dataset_error(toy, server, tmp_path):
    _, requests = server
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match="404"):
        fetch("toy", cache_dir=cache, progress=False)
    assert requests == [f"/mirror/{TOY_FILE}"]
    assert list(cache.iterdir()) == []


def test_download_without_pinned_checksum_logs_hash(toy, server, tmp_path, caplog):
    toy(sha256=None)
    _write(server[0])
    with caplog.at_level(logging.WARNING, logger="rnadiff.datasets"):
        got = fetch("toy", cache_dir=tmp_path / "cache", progress=False)
    assert got.read_bytes() == CONTENT
    assert TOY_SHA in caplog.text


def test_corrupt_cached_file_fails_verification(toy, tmp_path):
    file = _write(tmp_path / "cache", b"corrupt")
    assert fetch("toy", cache_dir=tmp_path / "cache", download=False) == file
    with pytest.raises(DatasetError, match="Checksum mismatch") as err:
        fetch("toy", cache_dir=tmp_path / "cache", verify=True)
    assert str(file) in str(err.value)


def test_missing_everywhere_explains_where_and_how(toy, tmp_path):
    toy(url="https://example.org/toy.bin")
    with pytest.raises(DatasetError) as err:
        fetch("toy", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", download=False)
    msg = str(err.value)
    assert "RNADIFF_DATA_DIR" in msg
    assert str(tmp_path / "data" / TOY_FILE) in msg
    assert str(tmp_path / "cache" / TOY_FILE) in msg
    assert "https://example.org/toy.bin" in msg


def test_missing_without_url_points_to_source(tmp_path):
    with pytest.raises(DatasetError, match="HSMMSingleCell") as err:
        fetch("trapnell2014_hsmm", cache_dir=tmp_path / "cache")
    assert "RNADIFF_DATA_DIR" in str(err.value)
    assert not (tmp_path / "cache").exists()


def test_unknown_name_lists_known_names():
    with pytest.raises(DatasetError, match="Unknown dataset 'nope'") as err:
        fetch("nope")
    assert "kang2018_ifnb" in str(err.value)
    assert "norman2019_tiny" in str(err.value)


def test_registry_entries():
    expected = {
        "kang2018_ifnb", "kang2018_ctrl", "papalexi2021", "trapnell2014_hsmm",
        "zeisel2015", "norman2019_tiny", "sciplex_smiles", "kang2018_full", "norman2019_full",
            "kang2018_ifnb_9k", "lincs2014_a375_doses",
    }  # fmt: skip
    assert set(REGISTRY) == expected
    for name, info in REGISTRY.items():
        assert info.name == name
        assert info.source and info.license and info.description
        assert info.url is None or info.url.startswith("https://")
        assert info.sha256 is None or len(info.sha256) == 64
    with pytest.raises(AttributeError):
        REGISTRY["zeisel2015"].url = "x"  # frozen


def test_load_refuses_csv():
    with pytest.raises(DatasetError, match="load_smiles"):
        load("sciplex_smiles")


def test_list_datasets_marks_local_files(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / REGISTRY["zeisel2015"].filename).write_bytes(b"x")
    table = list_datasets(data_dir=folder, cache_dir=tmp_path / "cache")
    assert list(table.columns[:4]) == ["name", "filename", "description", "available"]
    assert set(table["name"]) == set(REGISTRY)
    available = dict(zip(table["name"], table["available"], strict=True))
    assert available.pop("zeisel2015") == "yes"
    assert set(available.values()) == {"no"}


def test_load_smiles_columns(tmp_path):
    csv = tmp_path / "drugs.csv"
    csv.write_text("Aspirin,CC(=O)Oc1ccccc1C(=O)O,Other\nCaffeine,Cn1cnc2c1c(=O)n(C)c(=O)n2C,X\n")
    df = load_smiles(path=csv)
    assert list(df.columns) == ["name", "smiles", "pathway"]
    assert df.shape == (2, 3)
    assert df.loc[1, "name"] == "Caffeine"


real = pytest.mark.skipif(not REAL_DATA_DIR.is_dir(), reason="shared data folder absent")


@real
def test_real_pinned_checksums_match_shared_files():
    by_file = {info.filename: info for info in REGISTRY.values()}
    files = [p for p in REAL_DATA_DIR.iterdir() if p.name != "README.md" and p.is_file()]
    assert files
    for file in files:
        assert file.name in by_file, f"{file.name} is not registered"
        assert fetch(by_file[file.name].name, data_dir=REAL_DATA_DIR, verify=True) == file


@real
def test_real_norman_tiny_loads(monkeypatch):
    monkeypatch.setenv("RNADIFF_DATA_DIR", str(REAL_DATA_DIR))
    adata = load("norman2019_tiny", verify=True, download=False)
    assert adata.shape == (50, 50)
    assert "condition" in adata.obs
    smiles = load_smiles(download=False)
    assert smiles.shape == (189, 3)
    assert smiles["smiles"].notna().all()
