#!/usr/bin/env bash
# The main job on this machine: generate the embedded Held–Suarez data if missing, train the `small`
# Swin diffusion model with SWiPe on local CPU ranks (deepspeed launcher), forecast an ensemble from
# held-out initial conditions, and write the WeatherBench2 scorecard and plots. Rerunning continues.
# Extra arguments go to `aeris-ds demo` (e.g. --minutes 14 --nproc 2 --lead 30d).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
start=$EPOCHREALTIME
bash "$ROOT/tools/setup_env.sh" embedded  # the main job needs no test, GRIB or earth2studio packages
# The job prints its stage times at the end (and writes runs/demo/timings.json); it cannot time this step.
AERIS_DS_INSTALL_SECONDS=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
cd "$ROOT"
export AERIS_DS_INSTALL_SECONDS OMP_NUM_THREADS=1 TORCH_EXTENSIONS_DIR="$ROOT/.venv/torch_extensions" WANDB_MODE=offline
exec "$ROOT/.venv/bin/aeris-ds" demo "$@"
