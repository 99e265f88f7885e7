#!/usr/bin/env bash
# Create or update the local virtual environment .venv with aeris-ds and the extras a job needs.
#   tools/setup_env.sh            everything the tests use (embedded, ingest, dev, earth2studio)
#   tools/setup_env.sh embedded   only what the main job uses (launchers/demo.sh: ~1 min less on a fresh machine)
# Idempotent: a stamp of the requirement files and the extras skips pip when nothing changed (the full set
# counts for any subset). Source it or run it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${AERIS_VENV:-$ROOT/.venv}"
ALL="embedded,ingest,dev,earth2studio"
EXTRAS="${1:-$ALL}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
stamp() { echo "$VENV/.aeris-requirements-$1"; }
WANT="$(cat "$ROOT/requirements.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$(stamp "$EXTRAS")" 2>/dev/null)" != "$WANT" ] && [ "$(cat "$(stamp "$ALL")" 2>/dev/null)" != "$WANT" ]; then
  echo "setting up $VENV with [$EXTRAS] (one time, ~1–2 min)" >&2
  # torch is pinned to the CPU wheel in requirements.txt; it must be in the same pip command as the rest.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    -r "$ROOT/requirements.txt" -e "$ROOT[$EXTRAS]"
  # DeepSpeed JIT-builds its shared-memory comm op at the first engine start (30–75 s on 2 cores): build it
  # now, once per venv, so that no training's time budget pays for it. Best effort: without a compiler
  # DeepSpeed falls back to plain torch.distributed.
  TORCH_EXTENSIONS_DIR="$VENV/torch_extensions" "$VENV/bin/python" -c \
    "from deepspeed.comm.torch import build_shm_op; build_shm_op()" > /dev/null 2>&1 || true
  echo "$WANT" > "$(stamp "$EXTRAS")"
fi
