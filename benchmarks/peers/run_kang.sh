#!/usr/bin/env bash
# Make a Kang 2018 leave-one-cell-type-out split, run the installed peers on it, score them.
#
#   RNADIFF_DATA_DIR=../shared/data bash benchmarks/peers/run_kang.sh OUT_DIR [BUDGET] [CELL_TYPE] [PEERS...]
#
# BUDGET: quick (default) or full; CELL_TYPE: default "CD14+ Monocytes"; PEERS: default
# "scgen cpa squidiff" (each must be installed: bash benchmarks/peers/install.sh PEER).
# Peers run one after another (the machine has 2 cores). A peer that fails is reported and
# skipped. Writes OUT_DIR/{train,source,real}.h5ad, pred_<peer>_<budget>.h5ad, <peer>_<budget>.log,
# scores_<budget>.csv.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${1:?usage: $0 OUT_DIR [quick|full] [CELL_TYPE] [PEERS...]}"
BUDGET="${2:-quick}"
CELL_TYPE="${3:-CD14+ Monocytes}"
shift $(( $# < 3 ? $# : 3 ))
PEERS=("$@")
[ ${#PEERS[@]} -eq 0 ] && PEERS=(scgen cpa squidiff)
PEERS_DIR="${RNADIFF_PEERS_DIR:-$ROOT/.peers}"
MAIN_PY="${MAIN_PY:-$ROOT/.venv/bin/python}"

"$MAIN_PY" "$ROOT/benchmarks/peers/make_kang_split.py" "$OUT" --held-out "$CELL_TYPE" || exit 1
preds=()
for peer in "${PEERS[@]}"; do
  py="$PEERS_DIR/$peer/bin/python"
  if [ ! -f "$PEERS_DIR/$peer/.installed" ]; then
    echo "[$peer] not installed: bash benchmarks/peers/install.sh $peer" >&2
    continue
  fi
  pred="$OUT/pred_${peer}_${BUDGET}.h5ad"
  log="$OUT/${peer}_${BUDGET}.log"
  t0=$SECONDS
  if "$py" "$ROOT/benchmarks/peers/run_${peer}.py" --train "$OUT/train.h5ad" \
      --source "$OUT/source.h5ad" --out "$pred" --perturbation-key group_id --control ctrl \
      --target stim --cell-type-key cluster_id --seed 0 --budget "$BUDGET" >"$log" 2>&1; then
    echo "[$peer] ok in $((SECONDS - t0)) s"
    preds+=("$pred")
  else
    echo "[$peer] no usable prediction: $(grep "failed:" "$log" | tail -1)" >&2
  fi
done
[ ${#preds[@]} -gt 0 ] && "$MAIN_PY" "$ROOT/benchmarks/peers/score.py" "$OUT" "${preds[@]}" \
  --csv "$OUT/scores_${BUDGET}.csv"
