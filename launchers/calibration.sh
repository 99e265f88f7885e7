#!/usr/bin/env bash
# Calibration and 90-day stability of trained weights, scored into one results folder:
#   launchers/calibration.sh [WEIGHTS] [STORE] [OUT]      (default runs/demo/weights.pt data/heldsuarez.zarr
#                                                          results/calibration)
# 1. 20 test init times × 8 members × 10 days with the sampler saved with the weights: the calibration table
#    (spread/skill with 90 % bootstrap intervals, fair CRPS, rank histograms and their flatness), plots.
# 2. 4 test init times × 4 members × 90 days, streamed to zarr: the stability report (PASS/FAIL per
#    criterion), Hovmöller, spectra by lead, maps.
# Both go through tools/calibration.py into OUT/<label>-<name>/ and one table OUT/calibration.md. Forecast
# stores go to $WORK (default runs/calibration). Rerunning continues an interrupted forecast and skips finished
# ones. SAMPLER=KEY=VALUE,… overrides the sampler saved with the weights (as `aeris-ds forecast --sampler`);
# other variants on the same weights: tools/calibration.py --variant NAME=KEY=VALUE,… (its docstring).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WEIGHTS=${1:-runs/demo/weights.pt} STORE=${2:-data/heldsuarez.zarr} OUT=${3:-results/calibration}
WORK=${WORK:-runs/calibration}
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" WANDB_MODE=offline
run() { "$PYTHON" tools/calibration.py --weights "$(basename "$(dirname "$WEIGHTS")")=$WEIGHTS" --store "$STORE" \
    --work "$WORK" --out "$OUT" "$@"; }
run --init-times test:20 --members 8 --lead 10d --plots headline --variant "10d-20x8=${SAMPLER:-}"
run --init-times test:4 --members 4 --lead 90d --plots headline --variant "90d-4x4=${SAMPLER:-}"
