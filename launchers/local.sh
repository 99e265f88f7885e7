#!/usr/bin/env bash
# Local ranks (CPU here, GPUs where present) with the deepspeed launcher or torchrun.
#   launchers/local.sh --nproc 4 --layout dp=1,pp=2,wp=2,sp=1 --config small \
#       --ds-config ds_configs/zero1_fp32.json [--launcher deepspeed|torchrun] [--dry-run] [-- --steps 10]
# Validation, command and rank map live in aeris_ds/launch.py (shared by every launcher).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.venv/torch_extensions}"
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
exec "$PYTHON" -m aeris_ds.launch local --python "$PYTHON" "$@"
