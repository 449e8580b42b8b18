"""Registry of the real single-cell datasets used for development, tests and benchmarks.

Files are looked up, in order, at an explicit ``path``, in a data folder (``data_dir`` or the
``RNADIFF_DATA_DIR`` environment variable), in a cache folder (``cache_dir``,
``RNADIFF_CACHE_DIR`` or ``~/.cache/rnadiff``) and finally downloaded into the cache when the
entry has a URL. ``RNADIFF_DATA_URL`` names a base URL of a mirror that serves every file as
``<base>/<filename>``.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from rnadiff._errors import DatasetError

if TYPE_CHECKING:
    import anndata
    import pandas as pd

__all__ = ["REGISTRY", "DatasetInfo", "fetch", "list_datasets", "load", "load_smiles"]

logger = logging.getLogger("rnadiff.datasets")

_CHUNK = 1 << 20
_TIMEOUT_S = 60


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
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _verify(path: Path, info: DatasetInfo) -> None:
    got = _sha256(path)
    if info.sha256 is None:
        logger.warning("Dataset %r has no pinned sha256; %s has sha256 %s.", info.name, path, got)
    elif got != info.sha256:
        raise DatasetError(
            f"Checksum mismatch for dataset {info.name!r} at {path}: expected sha256 "
            f"{info.sha256}, got {got}. The file is corrupt or a different version; delete it "
            "and fetch it again, or point RNADIFF_DATA_DIR / path= at the right file."
        )


def _cache_folder(cache_dir: str | os.PathLike[str] | None) -> Path:
    folder = cache_dir or os.environ.get("RNADIFF_CACHE_DIR") or Path.home() / ".cache/rnadiff"
    return Path(folder).expanduser()


def _candidates(
    info: DatasetInfo, data_dir: str | os.PathLike[str] | None, cache_dir: Any
) -> list[tuple[str, Path]]:
    out = []
    if data_dir is not None:
        out.append(("data_dir argument", Path(data_dir).expanduser() / info.filename))
    elif os.environ.get("RNADIFF_DATA_DIR"):
        env_dir = Path(os.environ["RNADIFF_DATA_DIR"]).expanduser()
        out.append(("RNADIFF_DATA_DIR", env_dir / info.filename))
    out.append(("cache", _cache_folder(cache_dir) / info.filename))
    return out


def _download_url(info: DatasetInfo) -> str | None:
    base = os.environ.get("RNADIFF_DATA_URL")
    if base:
        return f"{base.rstrip('/')}/{urllib.parse.quote(info.filename)}"
    return info.url


def _download(url: str, dest: Path, info: DatasetInfo, progress: bool) -> None:
    if urllib.parse.urlparse(url).scheme not in ("http", "https"):
        raise DatasetError(f"Refusing to download dataset {info.name!r} from non-HTTP URL {url}.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    h, received = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            bar_kw = {"unit": "B", "unit_scale": True, "unit_divisor": 1024}
            with tqdm(total=total, desc=info.filename, disable=not progress, **bar_kw) as bar:
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total is not None and received != total:
            raise DatasetError(f"Incomplete download of {url}: got {received} of {total} bytes.")
        got = h.hexdigest()
        if info.sha256 is None:
            logger.warning(
                "Dataset %r has no pinned sha256; downloaded %s, sha256 %s.", info.name, url, got
            )
        elif got != info.sha256:
            raise DatasetError(
                f"Checksum mismatch for dataset {info.name!r} downloaded from {url}: expected "
                f"sha256 {info.sha256}, got {got}. The download was discarded."
            )
        os.replace(tmp, dest)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise DatasetError(f"Could not download dataset {info.name!r} from {url}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def fetch(
    name: str,
    *,
    path: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    progress: bool = True,
    verify: bool = False,
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
        Show a tqdm progress bar while downloading.
    verify : bool, default False
        Check the SHA-256 of a file found locally against the pinned one (downloads are always
        checked).

    Returns
    -------
    pathlib.Path
        Path of the dataset file.

    Raises
    ------
    DatasetError
        If the name is unknown, the file cannot be found or downloaded, or its checksum is wrong.
    """
    info = _info(name)
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise DatasetError(f"path={str(p)!r} given for dataset {name!r} does not exist.")
        if verify:
            _verify(p, info)
        return p
    candidates = _candidates(info, data_dir, cache_dir)
    for _, candidate in candidates:
        if candidate.is_file():
            if verify:
                _verify(candidate, info)
            return candidate
    url = _download_url(info)
    cached = candidates[-1][1]
    if download and url:
        _download(url, cached, info, progress)
        return cached
    looked = "\n".join(f"  - {p} ({where})" for where, p in candidates)
    if url:
        how = f"Or download it from {url} with fetch({name!r}, download=True)."
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
        Passed on to :func:`fetch` (``path``, ``data_dir``, ``cache_dir``, ``download``, ...).

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

    def available(info: DatasetInfo) -> str:
        found = any(p.is_file() for _, p in _candidates(info, data_dir, cache_dir))
        return "yes" if found else "no"

    rows = [(i.name, i.filename, i.description, available(i), i.url) for i in REGISTRY.values()]
    return pd.DataFrame(rows, columns=["name", "filename", "description", "available", "url"])
