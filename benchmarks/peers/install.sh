#!/usr/bin/env bash
# Install one peer tool (or all) into its own virtual environment under .peers/<peer>.
#
#   bash benchmarks/peers/install.sh scgen|cpa|squidiff|celleval|cellflow|scvi|state|gears|all
#
# Pins follow the shared peers notes (what installed and ran on this CPU-only machine).
# Idempotent: a peer whose .peers/<peer>/.installed exists is skipped (delete the folder to redo).
# Writes .peers/<peer>/versions.json with the versions of the key packages.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PEERS_DIR="${RNADIFF_PEERS_DIR:-$ROOT/.peers}"
PYTHON="${PYTHON:-python3}"
TORCH="torch==2.13.0"

PEERS=(scgen cpa squidiff celleval cellflow scvi state gears)
usage() { echo "usage: $0 ${PEERS[*]}|all" >&2; exit 2; }
[ $# -eq 1 ] || usage

key_packages() {
  case "$1" in
    scgen) echo "torch pertpy scvi-tools jax jaxlib flax anndata scanpy numpy statsmodels" ;;
    cpa) echo "torch cpa-tools scvi-tools jax jaxlib flax anndata scanpy numpy pandas scipy" ;;
    squidiff) echo "torch squidiff scanpy anndata numpy scikit-learn" ;;
    celleval) echo "torch cell-eval anndata numpy polars pdex" ;;
    cellflow) echo "cellflow-tools jax jaxlib flax optax ott-jax anndata scanpy numpy scikit-learn scipy" ;;
    scvi) echo "torch scvi-tools jax lightning anndata scanpy numpy" ;;
    state) echo "torch arc-state lightning anndata scanpy numpy" ;;
    gears) echo "torch cell-gears torch_geometric anndata scanpy numpy scipy" ;;
  esac
}

# pip install, without the local index's "Location ... is ignored" warnings
quiet_pip() {
  local py="$1"; shift
  "$py" -m pip install --quiet "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

install_peer() {
  local peer="$1" venv="$PEERS_DIR/$1"
  if [ -f "$venv/.installed" ]; then
    echo "[$peer] already installed in $venv (delete it to reinstall)"
    return 0
  fi
  echo "[$peer] creating $venv"
  local t0=$SECONDS
  rm -rf "$venv"
  mkdir -p "$PEERS_DIR"
  "$PYTHON" -m venv "$venv"
  local pip=(quiet_pip "$venv/bin/python")
  "${pip[@]}" --upgrade pip wheel
  case "$peer" in
    scgen)
      "${pip[@]}" "$TORCH" "pertpy[scgen]" "statsmodels<0.15"
      ;;
    cpa)
      "${pip[@]}" "$TORCH" "scvi-tools==0.20.3" "numpy<2" "anndata<0.10" "scanpy<1.10" \
        "jax==0.4.23" "jaxlib==0.4.23" "flax<0.8" "optax<0.2" "chex<0.1.86" "numpyro<0.14" \
        "pandas<2.2" "scipy<1.13" "setuptools<81" requests rdkit seaborn adjustText
      # a plain `pip install cpa-tools` resolves to the empty placeholder 0.0.0
      "${pip[@]}" --no-deps "cpa-tools==0.8.1"
      ;;
    squidiff)
      # squidiff declares no dependencies but imports these
      "${pip[@]}" "$TORCH" squidiff scanpy rdkit matplotlib scikit-learn
      ;;
    celleval)
      "${pip[@]}" "$TORCH" cell-eval
      ;;
    cellflow)
      # JAX only (no torch); `import cellflow` needs requests, which only its `embedding`
      # extra declares. cellflow-tools pins scikit-learn==1.5.1 and scipy<1.16 itself.
      "${pip[@]}" "cellflow-tools==0.0.9" requests
      ;;
    scvi)
      "${pip[@]}" "$TORCH" scvi-tools
      ;;
    state)
      # torch first: an unpinned torch would pull a CUDA build of several GB
      "${pip[@]}" "$TORCH"
      "${pip[@]}" arc-state
      ;;
    gears)
      "${pip[@]}" "$TORCH"
      "${pip[@]}" cell-gears torch_geometric "scipy<1.15"
      # GO annotations, which GEARS would download at run time: the SQLite file of Debian's
      # Bioconductor org.Hs.eg.db (NCBI gene2go), unpacked without installing R
      local deb_dir
      deb_dir="$(mktemp -d)"
      (cd "$deb_dir" && apt-get download "r-bioc-org.hs.eg.db=3.16.0-1") \
        || { echo "[gears] apt-get download failed (run apt-get update first)" >&2; exit 1; }
      dpkg-deb -x "$deb_dir"/r-bioc-org.hs.eg.db_*.deb "$deb_dir/x"
      cp "$deb_dir"/x/usr/lib/R/site-library/org.Hs.eg.db/extdata/org.Hs.eg.sqlite "$venv/"
      rm -rf "$deb_dir"
      ;;
    *) usage ;;
  esac
  "$venv/bin/python" - "$venv/versions.json" $(key_packages "$peer") <<'PY'
import json, sys
from importlib import metadata
out, names = sys.argv[1], sys.argv[2:]
versions = {"python": sys.version.split()[0]}
for n in names:
    try:
        versions[n] = metadata.version(n)
    except metadata.PackageNotFoundError:
        pass
json.dump(versions, open(out, "w"), indent=1)
print(json.dumps(versions))
PY
  echo "$((SECONDS - t0))" > "$venv/.installed"
  echo "[$peer] installed in $((SECONDS - t0)) s -> $venv/versions.json"
}

case "$1" in
  all) for p in "${PEERS[@]}"; do install_peer "$p"; done ;;
  *)
    for p in "${PEERS[@]}"; do [ "$p" = "$1" ] && { install_peer "$1"; exit 0; }; done
    usage
    ;;
esac
