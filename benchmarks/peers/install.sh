#!/usr/bin/env bash
# Install one peer tool (or all) into its own virtual environment under .peers/<peer>.
#
#   bash benchmarks/peers/install.sh scgen|cpa|squidiff|celleval|all
#
# Pins follow the shared peers notes (what installed and ran on this CPU-only machine).
# Idempotent: a peer whose .peers/<peer>/.installed exists is skipped (delete the folder to redo).
# Writes .peers/<peer>/versions.json with the versions of the key packages.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PEERS_DIR="${RNADIFF_PEERS_DIR:-$ROOT/.peers}"
PYTHON="${PYTHON:-python3}"
TORCH="torch==2.13.0"

usage() { echo "usage: $0 scgen|cpa|squidiff|celleval|all" >&2; exit 2; }
[ $# -eq 1 ] || usage

key_packages() {
  case "$1" in
    scgen) echo "torch pertpy scvi-tools jax jaxlib flax anndata scanpy numpy statsmodels" ;;
    cpa) echo "torch cpa-tools scvi-tools jax jaxlib flax anndata scanpy numpy pandas scipy" ;;
    squidiff) echo "torch squidiff scanpy anndata numpy scikit-learn" ;;
    celleval) echo "torch cell-eval anndata numpy polars pdex" ;;
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
  all) for p in scgen cpa squidiff celleval; do install_peer "$p"; done ;;
  scgen|cpa|squidiff|celleval) install_peer "$1" ;;
  *) usage ;;
esac
