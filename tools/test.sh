#!/usr/bin/env bash
# Run the test suite: sets up .venv when needed, then pytest on local CPU ranks (gloo).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
export OMP_NUM_THREADS=1 TORCH_EXTENSIONS_DIR="$ROOT/.venv/torch_extensions" WANDB_MODE=offline
exec "$ROOT/.venv/bin/python" -m pytest tests "$@"
