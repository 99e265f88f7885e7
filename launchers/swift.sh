#!/usr/bin/env bash
# Swift from a trained `small` diffusion run: consistency training, then autoregressive CRPS fine-tuning (both
# under the deepspeed launcher, from the presets small-consistency / small-crps), then forecasts of the
# diffusion run's 20 test init times × 4 members × 10 days with each one-step model, their scorecards, a
# 60-day rollout of the fine-tuned model with its stability report, the sampler speed benchmark and the
# comparison table. Every stage skips what is already done; name stages to run only those.
#   bash launchers/swift.sh [--from runs/demo] [--store data/heldsuarez.zarr] [--out runs/swift] \
#       [--minutes 7] [--nproc 2] [consistency crps consistency-forecasts crps-forecasts long bench table]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
FROM=runs/demo STORE=data/heldsuarez.zarr OUT=runs/swift MINUTES=7 NPROC=2 STAGES=()
while [ $# -gt 0 ]; do
  case "$1" in
    --from) FROM=$2; shift 2 ;;
    --store) STORE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --minutes) MINUTES=$2; shift 2 ;;
    --nproc) NPROC=$2; shift 2 ;;
    *) STAGES+=("$1"); shift ;;
  esac
done
[ ${#STAGES[@]} -gt 0 ] || STAGES=(consistency crps consistency-forecasts crps-forecasts long bench table)
export OMP_NUM_THREADS=1 TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$ROOT/.venv/torch_extensions}" WANDB_MODE=offline
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
BIN="$ROOT/.venv/bin"
mkdir -p "$OUT"
wants() { [[ " ${STAGES[*]} " == *" $1 "* ]]; }
stamp() { echo "[$(date -u +%H:%M:%S)] $*"; }

train() {  # config, init weights, out dir
  [ -e "$3/weights.pt" ] && { stamp "$1: $3/weights.pt exists"; return; }
  stamp "train $1 from $2"
  "$BIN/deepspeed" --num_accelerators "$NPROC" --master_port 29517 --module aeris_ds.train --config "$1" \
    --store "$STORE" --init-weights "$2" --out "$3" --max-minutes "$MINUTES"
}
forecast() {  # weights, consistency steps, out store, init times, lead; then its scorecard beside it
  stamp "forecast $3"
  "$BIN/torchrun" --nproc_per_node "$NPROC" --master_port 29518 -m aeris_ds.forecast.driver --weights "$1" \
    --store "$STORE" --consistency-steps "$2" --out "$3" --init-times "$4" --members 4 --lead "$5"
  [ -e "${3%.zarr}.scores" ] && { stamp "${3%.zarr}.scores exists"; return; }
  stamp "score $3"
  local train
  train=$("$BIN/python" -c "from aeris_ds.data.schema import open_store; print(open_store('$STORE').attrs['split_train'])")
  "$BIN/python" -m aeris_ds.cli evaluate "$3" --truth "$STORE" --out "${3%.zarr}.scores" --climatology-from "$train"
}

wants consistency && train small-consistency "$FROM/weights.pt" "$OUT/consistency"
wants crps && train small-crps "$OUT/consistency/weights.pt" "$OUT/crps"
# The diffusion run's forecast: 20 test init times × 4 members × 10 days.
if wants consistency-forecasts; then
  forecast "$OUT/consistency/weights.pt" 1 "$OUT/consistency-1step.zarr" test:20 10d
  forecast "$OUT/consistency/weights.pt" 2 "$OUT/consistency-2step.zarr" test:20 10d
fi
wants crps-forecasts && forecast "$OUT/crps/weights.pt" 1 "$OUT/crps-1step.zarr" test:20 10d
wants long && forecast "$OUT/crps/weights.pt" 1 "$OUT/crps-1step-60d.zarr" test:4 60d
if wants bench; then
  stamp "bench"
  (cd tools && "$BIN/python" bench_consistency.py --model small --batch 4 --repeats 3) | tee "$OUT/bench.md"
fi
if wants table; then
  "$BIN/python" tools/compare_scores.py --baseline "diffusion=$FROM/scores" \
    --system "consistency 1 step=$OUT/consistency-1step.scores" \
    --system "consistency 2 steps=$OUT/consistency-2step.scores" \
    --system "CRPS fine-tuned 1 step=$OUT/crps-1step.scores" --out "$OUT/comparison.md"
fi
stamp done
