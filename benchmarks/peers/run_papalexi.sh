#!/usr/bin/env bash
# Make the Papalexi 2021 multi-target split, run the installed peers on it, score them.
#
#   RNADIFF_DATA_DIR=../shared/data bash benchmarks/peers/run_papalexi.sh OUT_DIR [BUDGET] [PEERS...]
#
# One run per peer predicts all 25 knock-outs from the held-out non-targeting cells (one
# --target per knock-out, --batch-key bio_rep, no cell-type key). BUDGET: quick (default) or
# full; PEERS: default "cellflow scvi". Writes OUT_DIR/{train,source,real}.h5ad,
# pred_<peer>_<budget>.h5ad, <peer>_<budget>.log, scores_<budget>.csv (one row per target).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${1:?usage: $0 OUT_DIR [quick|full] [PEERS...]}"
BUDGET="${2:-quick}"
shift $(( $# < 2 ? $# : 2 ))
PEERS=("$@")
[ ${#PEERS[@]} -eq 0 ] && PEERS=(cellflow scvi)
PEERS_DIR="${RNADIFF_PEERS_DIR:-$ROOT/.peers}"
MAIN_PY="${MAIN_PY:-$ROOT/.venv/bin/python}"

[ -f "$OUT/split.json" ] || "$MAIN_PY" "$ROOT/benchmarks/peers/make_papalexi_split.py" "$OUT" || exit 1
mapfile -t TARGETS < <("$MAIN_PY" -c "import json,sys; print('\n'.join(json.load(open(sys.argv[1]))['targets']))" "$OUT/split.json")
target_args=()
for t in "${TARGETS[@]}"; do target_args+=(--target "$t"); done
preds=()
for peer in "${PEERS[@]}"; do
  if [ ! -f "$PEERS_DIR/$peer/.installed" ]; then
    echo "[$peer] not installed: bash benchmarks/peers/install.sh $peer" >&2
    continue
  fi
  pred="$OUT/pred_${peer}_${BUDGET}.h5ad"
  log="$OUT/${peer}_${BUDGET}.log"
  t0=$SECONDS
  if "$PEERS_DIR/$peer/bin/python" "$ROOT/benchmarks/peers/run_${peer}.py" \
      --train "$OUT/train.h5ad" --source "$OUT/source.h5ad" --out "$pred" \
      --perturbation-key top_grna_target --control non-targeting "${target_args[@]}" \
      --batch-key bio_rep --seed 0 --budget "$BUDGET" >"$log" 2>&1; then
    echo "[$peer] ok in $((SECONDS - t0)) s"
    preds+=("$pred")
  else
    echo "[$peer] no usable prediction: $(grep "failed:" "$log" | tail -1)" >&2
  fi
done
[ ${#preds[@]} -gt 0 ] && "$MAIN_PY" "$ROOT/benchmarks/peers/score.py" "$OUT" "${preds[@]}" \
  --csv "$OUT/scores_${BUDGET}.csv"
