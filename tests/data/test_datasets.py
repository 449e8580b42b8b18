"""Tests of the dataset registry (rnadiff.data._datasets); no internet access needed."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rnadiff._errors import DatasetError
from rnadiff.data import _datasets
from rnadiff.data._datasets import REGISTRY, DatasetInfo, fetch, list_datasets, load, load_smiles

_ENV_DATA_DIR = os.environ.get("RNADIFF_DATA_DIR")
REAL_DATA_DIR = Path(_ENV_DATA_DIR) if _ENV_DATA_DIR else Path(__file__).parents[3] / "shared/data"

CONTENT = b"toy dataset content\n" * 100
TOY_SHA = hashlib.sha256(CONTENT).hexdigest()
TOY_FILE = "toy_file.bin"
INDEX = _datasets._HASH_INDEX


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


@dataclass
class Server:
    folder: Path  # served as RNADIFF_DATA_URL
    requests: list[str] = field(default_factory=list)  # paths of the GET requests received
    truncated: set[str] = field(default_factory=set)  # paths answered with half their bytes


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Serve a temporary folder on 127.0.0.1 and point RNADIFF_DATA_URL at it."""
    root = tmp_path / "served"
    root.mkdir()
    srv = Server(root / "mirror")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            srv.requests.append(self.path)
            if self.path not in srv.truncated:
                return super().do_GET()
            # Announce the whole file, send half of it, hang up: a connection lost mid-way.
            data = (root / self.path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
    )
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv("RNADIFF_DATA_URL", f"http://127.0.0.1:{httpd.server_address[1]}/mirror/")
    srv.folder.mkdir()
    try:
        yield srv
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


@pytest.fixture
def hash_calls(monkeypatch):
    """Count the SHA-256 computations of the registry (pooch's own check of a download aside)."""
    calls: list[Path] = []
    real = _datasets._sha256

    def counting(path):
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(_datasets, "_sha256", counting)
    return calls


def test_download_from_mirror_lands_in_cache_once(toy, server, tmp_path, hash_calls):
    _write(server.folder)
    cache = tmp_path / "cache"
    got = fetch("toy", cache_dir=cache, progress=True)
    assert got == cache / TOY_FILE
    assert got.read_bytes() == CONTENT
    assert server.requests == [f"/mirror/{TOY_FILE}"]
    assert sorted(p.name for p in cache.iterdir()) == sorted([INDEX, TOY_FILE])  # no temp file
    assert fetch("toy", cache_dir=cache) == got
    assert len(server.requests) == 1  # the second fetch used the cache...
    assert hash_calls == []  # ...and the hash pooch checked while downloading


def test_download_checksum_mismatch_leaves_nothing(toy, server, tmp_path):
    _write(server.folder, b"tampered content")
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match="Checksum mismatch for dataset 'toy'") as err:
        fetch("toy", cache_dir=cache, progress=False, verify=False)  # downloads always checked
    assert f"expected sha256 {TOY_SHA}" in str(err.value)
    assert hashlib.sha256(b"tampered content").hexdigest() in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no pooch traceback
    assert len(server.requests) == 1
    assert list(cache.iterdir()) == []


def test_download_404_is_a_dataset_error(toy, server, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match=r"Could not download dataset 'toy'.*404") as err:
        fetch("toy", cache_dir=cache, progress=False)
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no requests traceback
    assert server.requests == [f"/mirror/{TOY_FILE}"]
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize("pinned", [True, False])
def test_truncated_download_leaves_nothing(toy, server, tmp_path, pinned):
    if not pinned:
        toy(sha256=None)  # nothing but the announced length can tell the file is incomplete
    _write(server.folder)
    server.truncated.add(f"/mirror/{TOY_FILE}")
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match="Could not download dataset 'toy'"):
        fetch("toy", cache_dir=cache, progress=False, verify=pinned)
    assert server.requests == [f"/mirror/{TOY_FILE}"]
    assert list(cache.iterdir()) == []


def test_unpinned_download_needs_verify_false_and_logs_hash(toy, server, tmp_path, caplog):
    toy(sha256=None)
    _write(server.folder)
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match=r"no pinned SHA-256.*cannot be verified") as err:
        fetch("toy", cache_dir=cache, progress=False)
    assert "verify=False" in str(err.value)
    assert server.requests == []  # refused before any request
    assert not cache.exists()
    with caplog.at_level(logging.WARNING, logger="rnadiff.datasets"):
        got = fetch("toy", cache_dir=cache, progress=False, verify=False)
    assert got.read_bytes() == CONTENT
    assert TOY_SHA in caplog.text


@pytest.mark.parametrize("name", ["kang2018_full", "norman2019_full"])
def test_unpinned_entries_refused_unless_verify_false(name, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match=f"{name}.*cannot be verified.*verify=False"):
        fetch(name, cache_dir=cache)  # would download from figshare: refused before that
    assert not cache.exists()
    local = _write(tmp_path / "data").rename(tmp_path / "data" / REGISTRY[name].filename)
    with pytest.raises(DatasetError, match=f"the file {local} cannot be verified"):
        fetch(name, data_dir=tmp_path / "data", cache_dir=cache)
    assert fetch(name, data_dir=tmp_path / "data", cache_dir=cache, verify=False) == local


def test_corrupt_cached_file_fails_verification(toy, tmp_path):
    file = _write(tmp_path / "cache", b"corrupt")
    with pytest.raises(DatasetError, match="Checksum mismatch") as err:
        fetch("toy", cache_dir=tmp_path / "cache")
    assert str(file) in str(err.value)
    assert f"expected sha256 {TOY_SHA}" in str(err.value)
    assert f"got {hashlib.sha256(b'corrupt').hexdigest()}" in str(err.value)
    assert "verify=False" in str(err.value)
    assert fetch("toy", cache_dir=tmp_path / "cache", verify=False) == file


@pytest.mark.parametrize("where", ["path", "data_dir", "cache_dir"])
def test_local_hash_is_reused_until_the_file_changes(toy, tmp_path, hash_calls, where):
    cache = tmp_path / "cache"
    file = _write(cache if where == "cache_dir" else tmp_path / "data")
    location = {"path": {"path": file}, "data_dir": {"data_dir": file.parent}, "cache_dir": {}}
    fetch_it = functools.partial(fetch, "toy", cache_dir=cache, **location[where])
    for _ in range(3):
        assert fetch_it() == file
    assert hash_calls == [file.resolve()]
    index = json.loads((cache / INDEX).read_text())
    assert index[str(file.resolve())]["sha256"] == TOY_SHA

    stat = file.stat()
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: mtime differs
    assert fetch_it() == file
    assert fetch_it() == file
    assert len(hash_calls) == 2

    file.write_bytes(b"X" * len(CONTENT))  # same size, other bytes, later mtime
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2 * 10**9))
    bad = hashlib.sha256(b"X" * len(CONTENT)).hexdigest()
    with pytest.raises(DatasetError, match=f"expected sha256 {TOY_SHA}, got {bad}"):
        fetch_it()
    assert len(hash_calls) == 3
    assert fetch_it(verify=False) == file
    assert len(hash_calls) == 3  # verify=False does not hash
    assert [p.name for p in cache.iterdir() if p.name.startswith(INDEX)] == [INDEX]  # no temps


def test_unreadable_or_unwritable_index_only_costs_a_rehash(toy, tmp_path, hash_calls, monkeypatch):
    cache = tmp_path / "cache"
    file = _write(tmp_path / "data")
    cache.mkdir()
    (cache / INDEX).write_text("{not json")
    assert fetch("toy", data_dir=file.parent, cache_dir=cache) == file
    assert json.loads((cache / INDEX).read_text())[str(file.resolve())]["sha256"] == TOY_SHA
    (cache / INDEX).unlink()

    def refuse(*args):
        raise PermissionError("read-only cache")

    monkeypatch.setattr(_datasets.os, "replace", refuse)
    assert fetch("toy", data_dir=file.parent, cache_dir=cache) == file
    assert fetch("toy", data_dir=file.parent, cache_dir=cache) == file
    assert len(hash_calls) == 3
    assert list(cache.iterdir()) == []  # the temporary index was removed


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
    unpinned = {name for name, info in REGISTRY.items() if info.sha256 is None}
    assert unpinned == {"kang2018_full", "norman2019_full"}  # usable only with verify=False
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
    df = load_smiles(path=csv, verify=False)  # not the registered file
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
        assert fetch(by_file[file.name].name, data_dir=REAL_DATA_DIR) == file


@real
def test_real_norman_tiny_loads(monkeypatch):
    monkeypatch.setenv("RNADIFF_DATA_DIR", str(REAL_DATA_DIR))
    adata = load("norman2019_tiny", download=False)
    assert adata.shape == (50, 50)
    assert "condition" in adata.obs
    smiles = load_smiles(download=False)
    assert smiles.shape == (189, 3)
    assert smiles["smiles"].notna().all()
