"""Registry of the real single-cell datasets used for development, tests and benchmarks.

Files are looked up, in order, at an explicit ``path``, in a data folder (``data_dir`` or the
``RNADIFF_DATA_DIR`` environment variable), in a cache folder (``cache_dir``,
``RNADIFF_CACHE_DIR`` or ``~/.cache/rnadiff``) and finally downloaded into the cache with
:mod:`pooch` when the entry has a URL. ``RNADIFF_DATA_URL`` names a base URL of a mirror that
serves every file as ``<base>/<filename>``.

Every file is checked against the entry's pinned SHA-256 unless the caller passes
``verify=False``; entries without a pinned hash are refused otherwise. The hash of a local file
is remembered in a small JSON index in the cache folder, keyed by absolute path, size and
modification time, so an unchanged file is hashed once, not at every call.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnadiff._errors import DatasetError

if TYPE_CHECKING:
    import anndata
    import pandas as pd

__all__ = ["REGISTRY", "DatasetInfo", "fetch", "list_datasets", "load", "load_smiles"]

logger = logging.getLogger("rnadiff.datasets")

_TIMEOUT_S = 60
_HASH_INDEX = ".sha256-index.json"  # in the cache folder: {abs path: {size, mtime_ns, sha256}}


@dataclass(frozen=True)
class DatasetInfo:
    """One registered dataset file.

    Attributes
    ----------
    name : str
        Registry key.
    filename : str
        File name looked up in the data and cache folders and on a mirror.
    sha256 : str or None
        Pinned SHA-256 of the file (``None`` when unknown).
    url : str or None
        Public download URL (``None`` when the file has no public host of its own).
    description, source, license : str
        What the file holds; citation and where the original lives; license of the data.
    """

    name: str
    filename: str
    sha256: str | None
    url: str | None
    description: str
    source: str
    license: str


_MUSCAT = "Subset from the muscat R package (HelenaLC/muscat data/sce.rda, data/kang_se.rda)."
_PERTPY = "Full-size .h5ad published on figshare by scverse pertpy (pertpy.data.{})."

# fmt: off
REGISTRY: dict[str, DatasetInfo] = {
    d.name: d
    for d in [
        DatasetInfo(
            "kang2018_ifnb", "kang2018_ifnb_pbmc_counts.h5ad",
            "ef639eff4ba0ed0ed7d3302909f8edb4eb1e2425e15792c9af1b0340f04d4d8d", None,
            "PBMCs, ctrl vs IFN-beta stim, 1556 cells x 1267 genes, raw UMI counts, 5 cell types.",
            f"Kang et al. 2018, Nat Biotechnol 36:89-94; GEO GSE96583. {_MUSCAT}", "GPL-3",
        ),
        DatasetInfo(
            "kang2018_ctrl", "kang2018_ctrl_pbmc_counts.h5ad",
            "39f3620c882cfe35eb0eda940d94072afbab6c4c5c0f6b9533e92141feb9c132", None,
            "Control PBMCs, 12261 cells x 1287 genes, raw UMI counts, 8 cell types, 8 donors.",
            f"Kang et al. 2018, Nat Biotechnol 36:89-94; GEO GSE96583. {_MUSCAT}", "GPL-3",
        ),
        DatasetInfo(
            "papalexi2021", "papalexi2021_eccite_thp1_counts.h5ad",
            "21bbab00fb55f7cde13b456fadebf85952ce517f42852b77a09aa84a80602456", None,
            "ECCITE-seq THP-1 CRISPR screen, 20729 cells x 299 genes, 25 knock-out targets.",
            "Papalexi et al. 2021, Nat Genet 53:322-331. Subset from the sceptre R package "
            "(Katsevich-Lab/sceptre data/lowmoi_example_data.rda).", "GPL-3",
        ),
        DatasetInfo(
            "trapnell2014_hsmm", "trapnell2014_hsmm_timecourse_fpkm.h5ad",
            "1fd128a0aad6075239c399158524d74a9d732127e851c72508fce28734bd15bf", None,
            "HSMM myoblast differentiation time course (0/24/48/72 h), 271 cells x 47192, FPKM.",
            "Trapnell et al. 2014, Nat Biotechnol 32:381-386. Bioconductor package "
            "HSMMSingleCell (Debian: r-bioc-hsmmsinglecell).", "Artistic-2.0",
        ),
        DatasetInfo(
            "zeisel2015", "zeisel2015_cortex_deep_counts.h5ad",
            "e6206955eb057b7d1a36051eb9830b86093df0426b805b30a79d2b16bf35028a", None,
            "Mouse cortex, 500 deeply sequenced cells x 3529 genes, raw UMI counts.",
            "Zeisel et al. 2015, Science 347:1138-1142. From the SAVER R package "
            "(mohuangx/SAVER data/linnarsson.rda).", "MIT",
        ),
        DatasetInfo(
            "norman2019_tiny", "norman2019_tiny_counts.h5ad",
            "05e8cbf1916f8287c0b7fce8c3952727adfa097fa2d8177554cef6238cbff5c3", None,
            "Tiny CRISPRa subset, 50 cells x 50 genes, 42 single/combination perturbations.",
            "Norman et al. 2019, Science 365:786-793. Subset from btraven00/scx "
            "tests/fixtures/norman_subset.h5ad.", "GPL-3",
        ),
        DatasetInfo(
            "sciplex_smiles", "sciplex_drugs_smiles.csv",
            "3fe1296157f35d19baf9c3cd80df08a4894a9d3fc6d8695cd0da868d41c26dcc", None,
            "sciPlex 3 compounds: 189 rows, no header, columns name, SMILES, pathway.",
            "Srivatsan et al. 2020, Science 367:45-51. Drug list from theislab/chemCPA.", "MIT",
        ),
        DatasetInfo(
            "kang2018_ifnb_9k", "kang2018_ifnb_9k_genes_counts.h5ad",
            "acad07e8c5a59dfb2f9444511270c1340d2eb3147bc477c0b8167a83663254d0", None,
            "PBMCs, ctrl vs IFN-beta stim, 2000 cells x 9015 genes, raw UMI counts (sparse), "
            "no cell-type labels: a realistic gene space.",
            "Kang et al. 2018, Nat Biotechnol 36:89-94; GEO GSE96583. From the harmony R "
            "package (immunogenomics/harmony data/pbmc_stim.RData).", "GPL-3",
        ),
        DatasetInfo(
            "lincs2014_a375_doses", "lincs2014_ljp005_a375_doses.h5ad",
            "aeae11734ce389a50d232cbf358c53f64f0ea063cc5373d38256a75620773fd1", None,
            "BULK LINCS L1000 plate LJP005_A375_24H: 377 wells x 978 landmark genes, log2 "
            "expression; 59 kinase inhibitors x 6 doses (0.04-10 uM) + 26 DMSO wells, SMILES.",
            "Subramanian et al. 2017, Cell 171:1437-1452. From cmap/cmapPy test_l1000.gct "
            "(BSD-3); SMILES from theislab/chemCPA embeddings/lincs_drugs_smiles.csv (MIT).",
            "BSD-3 (data), MIT (SMILES)",
        ),
        DatasetInfo(
            "kang2018_full", "kang_2018.h5ad", None,
            "https://figshare.com/ndownloader/files/34464122",
            "Full processed Kang 2018 PBMC dataset (ctrl vs IFN-beta stimulated).",
            "Kang et al. 2018, Nat Biotechnol 36:89-94; GEO GSE96583. "
            + _PERTPY.format("kang_2018"), "not stated here: see the figshare record",
        ),
        DatasetInfo(
            "norman2019_full", "norman_2019.h5ad", None,
            "https://figshare.com/ndownloader/files/34027562",
            "Full processed Norman 2019 CRISPRa Perturb-seq screen (single and double genes).",
            "Norman et al. 2019, Science 365:786-793. " + _PERTPY.format("norman_2019"),
            "not stated here: see the figshare record",
        ),
    ]
}
# fmt: on


def _info(name: str) -> DatasetInfo:
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise DatasetError(f"Unknown dataset {name!r}. Known datasets: {known}.") from None


def _sha256(path: Path) -> str:
    import pooch

    return pooch.file_hash(str(path), alg="sha256")


def _read_index(cache: Path) -> dict[str, Any]:
    try:
        index = json.loads((cache / _HASH_INDEX).read_text())
    except (OSError, ValueError):  # absent or unreadable: it is only a cache, start afresh
        return {}
    return index if isinstance(index, dict) else {}


def _remember(cache: Path, file: Path, stat: os.stat_result, sha256: str) -> None:
    """Record a file's hash in the cache's index; a failure to write only costs a re-hash."""
    index = {k: v for k, v in _read_index(cache).items() if os.path.exists(k)}
    index[str(file)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256}
    try:
        cache.mkdir(parents=True, exist_ok=True)
        # A temporary file in the same folder, then os.replace: readers never see half an index.
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=f"{_HASH_INDEX}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(index, f, indent=1, sort_keys=True)
            os.replace(tmp, cache / _HASH_INDEX)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError as exc:
        logger.debug("Could not write the hash index in %s: %s", cache, exc)


def _file_sha256(file: Path, cache: Path) -> str:
    """SHA-256 of ``file``, taken from the index while its size and mtime are unchanged."""
    file = file.resolve()
    stat = file.stat()
    entry = _read_index(cache).get(str(file))
    if (
        isinstance(entry, dict)
        and entry.get("size") == stat.st_size
        and entry.get("mtime_ns") == stat.st_mtime_ns
        and isinstance(entry.get("sha256"), str)
    ):
        return entry["sha256"]
    sha256 = _sha256(file)
    after = file.stat()
    if (after.st_size, after.st_mtime_ns) == (stat.st_size, stat.st_mtime_ns):  # not mid-write
        _remember(cache, file, stat, sha256)
    return sha256


def _unpinned(info: DatasetInfo, what: str) -> DatasetError:
    return DatasetError(
        f"Dataset {info.name!r} has no pinned SHA-256, so {what} cannot be verified. To use it "
        f"anyway, pass verify=False (e.g. fetch({info.name!r}, verify=False) or "
        f"load({info.name!r}, verify=False)); a download then logs its SHA-256, which can be "
        "pinned in the registry."
    )


def _verify_local(file: Path, info: DatasetInfo, cache: Path) -> None:
    if info.sha256 is None:
        raise _unpinned(info, f"the file {file}")
    got = _file_sha256(file, cache)
    if got != info.sha256:
        raise DatasetError(
            f"Checksum mismatch for dataset {info.name!r} at {file}: expected sha256 "
            f"{info.sha256}, got {got}. The file is corrupt or a different version: delete it "
            "and fetch it again, point RNADIFF_DATA_DIR / path= at the registered file, or pass "
            "verify=False to use it as it is."
        )


def _cache_folder(cache_dir: str | os.PathLike[str] | None) -> Path:
    folder = cache_dir or os.environ.get("RNADIFF_CACHE_DIR") or Path.home() / ".cache/rnadiff"
    return Path(folder).expanduser()


def _candidates(
    info: DatasetInfo, data_dir: str | os.PathLike[str] | None, cache: Path
) -> list[tuple[str, Path]]:
    out = []
    if data_dir is not None:
        out.append(("data_dir argument", Path(data_dir).expanduser() / info.filename))
    elif os.environ.get("RNADIFF_DATA_DIR"):
        env_dir = Path(os.environ["RNADIFF_DATA_DIR"]).expanduser()
        out.append(("RNADIFF_DATA_DIR", env_dir / info.filename))
    out.append(("cache", cache / info.filename))
    return out


def _download_url(info: DatasetInfo) -> str | None:
    base = os.environ.get("RNADIFF_DATA_URL")
    if base:
        return f"{base.rstrip('/')}/{urllib.parse.quote(info.filename)}"
    return info.url


def _download(url: str, dest: Path, info: DatasetInfo, *, progress: bool, verify: bool) -> None:
    """Download ``url`` to ``dest`` with pooch, which streams into a temporary file beside
    ``dest`` and moves it into place only once complete and matching the pinned hash."""
    import pooch

    if info.sha256 is None and verify:
        raise _unpinned(info, f"a download from {url}")
    if urllib.parse.urlparse(url).scheme not in ("http", "https"):
        raise DatasetError(f"Refusing to download dataset {info.name!r} from non-HTTP URL {url}.")
    known_hash = None if info.sha256 is None else f"sha256:{info.sha256}"
    downloader = pooch.HTTPDownloader(progressbar=progress, timeout=_TIMEOUT_S)
    try:
        pooch.retrieve(url, known_hash, fname=dest.name, path=dest.parent, downloader=downloader)
    except (OSError, ValueError) as exc:  # requests' errors are OSErrors; a bad hash a ValueError
        # pooch words a bad hash "... expected sha256:<hex> but got <hex>. ..."
        got = re.search(r"but got ([0-9a-fA-F]{64})\b", str(exc))
        if isinstance(exc, ValueError) and got:
            raise DatasetError(
                f"Checksum mismatch for dataset {info.name!r} downloaded from {url}: expected "
                f"sha256 {info.sha256}, got {got.group(1).lower()}. The download was discarded; "
                "the server holds a different version of the file."
            ) from None
        raise DatasetError(
            f"Could not download dataset {info.name!r} from {url}: {exc}. Nothing was kept in "
            f"{dest.parent}."
        ) from None
    if info.sha256 is not None:  # pooch has just checked it: spare the next fetch a re-hash
        _remember(dest.parent, dest.resolve(), dest.stat(), info.sha256)
    else:
        logger.warning(
            "Dataset %r has no pinned sha256; downloaded %s unverified, sha256 %s.",
            info.name, url, _sha256(dest),
        )  # fmt: skip


def fetch(
    name: str,
    *,
    path: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    progress: bool = True,
    verify: bool = True,
) -> Path:
    """Return the local path of a registered dataset file, downloading it if needed.

    Parameters
    ----------
    name : str
        Registry name, see :data:`REGISTRY` or :func:`list_datasets`.
    path : path-like, optional
        Explicit file to use; it must exist.
    data_dir : path-like, optional
        Folder holding the file; defaults to the ``RNADIFF_DATA_DIR`` environment variable.
    cache_dir : path-like, optional
        Download cache; defaults to ``RNADIFF_CACHE_DIR``, else ``~/.cache/rnadiff``.
    download : bool, default True
        Download into the cache when the file is not found locally and a URL is known (the
        entry's ``url`` or ``<RNADIFF_DATA_URL>/<filename>``).
    progress : bool, default True
        Show a progress bar while downloading.
    verify : bool, default True
        Check the file's SHA-256 against the pinned one, wherever it was found. A local file's
        hash is remembered in the cache folder (keyed by absolute path, size and mtime), so an
        unchanged file is hashed only once. Entries without a pinned hash are refused unless
        ``verify=False``. A download of a pinned entry is always checked.

    Returns
    -------
    pathlib.Path
        Path of the dataset file.

    Raises
    ------
    DatasetError
        If the name is unknown, the file cannot be found or downloaded, its checksum is wrong,
        or it has no pinned checksum and ``verify`` is true.

    Examples
    --------
    >>> fetch("norman2019_tiny", data_dir="../shared/data")  # doctest: +SKIP
    PosixPath('../shared/data/norman2019_tiny_counts.h5ad')
    """
    info = _info(name)
    cache = _cache_folder(cache_dir)
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise DatasetError(f"path={str(p)!r} given for dataset {name!r} does not exist.")
        if verify:
            _verify_local(p, info, cache)
        return p
    candidates = _candidates(info, data_dir, cache)
    for _, candidate in candidates:
        if candidate.is_file():
            if verify:
                _verify_local(candidate, info, cache)
            return candidate
    url = _download_url(info)
    cached = candidates[-1][1]
    if download and url:
        _download(url, cached, info, progress=progress, verify=verify)
        return cached
    looked = "\n".join(f"  - {p} ({where})" for where, p in candidates)
    if url:
        unverified = ", verify=False" if info.sha256 is None else ""
        how = f"Or download it from {url} with fetch({name!r}, download=True{unverified})."
    else:
        how = (
            "It has no public download URL: obtain it from the original source "
            f"({info.source.rstrip('.')}), or set RNADIFF_DATA_URL to a mirror serving it."
        )
    raise DatasetError(
        f"Dataset {name!r} (file {info.filename!r}) was not found. Looked in:\n{looked}\n"
        f"To fix: set RNADIFF_DATA_DIR to a folder holding {info.filename!r}, or pass data_dir= "
        f"or path=. {how}"
    )


def load(name: str, **fetch_kwargs: Any) -> anndata.AnnData:
    """Load a registered ``.h5ad`` dataset as an AnnData.

    Parameters
    ----------
    name : str
        Registry name of an ``.h5ad`` dataset.
    **fetch_kwargs
        Passed on to :func:`fetch` (``path``, ``data_dir``, ``cache_dir``, ``download``,
        ``verify``, ...).

    Returns
    -------
    anndata.AnnData
        The dataset.

    Raises
    ------
    DatasetError
        If the dataset is not an ``.h5ad`` file, cannot be fetched, or cannot be read.
    """
    info = _info(name)
    if not info.filename.endswith(".h5ad"):
        raise DatasetError(
            f"Dataset {name!r} ({info.filename}) is not an .h5ad file: use fetch({name!r}) for "
            "its path, or load_smiles() for the drug SMILES table."
        )
    import anndata

    file = fetch(name, **fetch_kwargs)
    try:
        return anndata.read_h5ad(file)
    except Exception as exc:
        raise DatasetError(f"Could not read dataset {name!r} from {file}: {exc}") from exc


def load_smiles(name: str = "sciplex_smiles", **fetch_kwargs: Any) -> pd.DataFrame:
    """Load the drug SMILES table.

    Parameters
    ----------
    name : str, default "sciplex_smiles"
        Registry name of a header-less CSV with name, SMILES and pathway columns.
    **fetch_kwargs
        Passed on to :func:`fetch`.

    Returns
    -------
    pandas.DataFrame
        Columns ``name``, ``smiles`` and ``pathway``.
    """
    import pandas as pd

    file = fetch(name, **fetch_kwargs)
    return pd.read_csv(file, header=None, names=["name", "smiles", "pathway"], dtype=str)


def list_datasets(
    *,
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """List the registered datasets and whether each is available locally.

    Parameters
    ----------
    data_dir : path-like, optional
        Data folder, as in :func:`fetch`.
    cache_dir : path-like, optional
        Cache folder, as in :func:`fetch`.

    Returns
    -------
    pandas.DataFrame
        Columns ``name``, ``filename``, ``description``, ``available`` ("yes" or "no") and
        ``url`` (``None`` when there is no public URL).
    """
    import pandas as pd

    cache = _cache_folder(cache_dir)

    def available(info: DatasetInfo) -> str:
        found = any(p.is_file() for _, p in _candidates(info, data_dir, cache))
        return "yes" if found else "no"

    rows = [(i.name, i.filename, i.description, available(i), i.url) for i in REGISTRY.values()]
    return pd.DataFrame(rows, columns=["name", "filename", "description", "available", "url"])
