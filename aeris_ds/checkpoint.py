"""Checkpoints: DeepSpeed's engine state + our client state, committed atomically.

DeepSpeed writes ``<dir>/<tag>/`` (each rank its own files). Every rank then writes its EMA and RNG states
beside them, all ranks meet at a barrier, and only then rank 0 writes ``<tag>/COMPLETE`` (the step and the
size of every file of the tag) and swaps the ``latest`` pointer with an atomic rename. A crash at any point
of a save leaves ``latest`` on the last complete checkpoint. A restart checks the files of the newest
complete tag against that manifest and falls back to the next older valid one, saying what it skipped.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from aeris_ds.ema import EMA
from aeris_ds.errors import CheckpointError

LATEST = "latest_complete"
COMPLETE = "COMPLETE"


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def latest_tag(directory: str | Path) -> str | None:
    pointer = Path(directory) / LATEST
    return pointer.read_text().strip() if pointer.exists() else None


def ensure_writable(directory: str | Path) -> None:
    """Fail before the first step, not at the first save, when checkpoints cannot be written."""
    directory = Path(directory)
    probe = directory / f".write_probe_{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise CheckpointError(f"checkpoints folder {directory} is not writable: {err.strerror or err} "
                              "(choose another run folder with --out)") from err


def save(directory: str | Path, engine, ema: EMA, step: int, signature: dict, keep: int = 2) -> Path:
    directory = Path(directory)
    tag = f"step{step:08d}"
    client = {"step": step, "signature": signature}
    engine.save_checkpoint(str(directory), tag=tag, client_state=client, save_latest=False)
    rank = dist.get_rank()
    _atomic_save({"ema": ema.state_dict(), "rng": _rng_state(), "step": step}, directory / tag / f"aeris_rank{rank}.pt")
    dist.barrier()
    if rank == 0:
        files = {p.name: p.stat().st_size for p in sorted((directory / tag).iterdir()) if p.is_file()}
        marker = directory / tag / f".{COMPLETE}.tmp"
        marker.write_text(json.dumps({"step": step, "world": dist.get_world_size(), "files": files}))
        os.replace(marker, directory / tag / COMPLETE)
        pointer = directory / f".{LATEST}.tmp"
        pointer.write_text(tag)
        os.replace(pointer, directory / LATEST)
        complete = sorted(p for p in directory.glob("step*") if (p / COMPLETE).exists())
        for old in complete[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return directory / tag


def problems(path: Path) -> list[str]:
    """Why the tag at ``path`` cannot be resumed (empty when it can): every file the save recorded must be
    there with its size, and be a readable torch archive (our per-rank files are checked in full)."""
    try:
        manifest = json.loads((path / COMPLETE).read_text())
        if isinstance(manifest, int):  # written before manifests: the per-rank files present are all we know
            manifest = {"files": {}, "world": len(list(path.glob("aeris_rank*.pt")))}
        files, world = manifest["files"], manifest["world"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return [f"{COMPLETE} marker unreadable ({err})"]
    found = []
    expected = set(files) | {f"aeris_rank{r}.pt" for r in range(world)}
    for name in sorted(expected):
        file = path / name
        if not file.is_file():
            found.append(f"{name} missing")
        elif name in files and file.stat().st_size != files[name]:
            found.append(f"{name} is {file.stat().st_size} bytes, {files[name]} were written")
        elif name.endswith(".pt"):
            try:
                with zipfile.ZipFile(file) as archive:
                    bad = archive.testzip() if name.startswith("aeris_rank") else None
            except (OSError, zipfile.BadZipFile) as err:
                bad = str(err)
            if bad is not None:
                found.append(f"{name} is damaged ({bad})")
    return found


def choose_tag(directory: str | Path) -> str | None:
    """The newest complete tag whose files are all valid; reports on stderr each newer one it skips.

    Raises CheckpointError when complete tags exist but none is valid (starting over would silently
    discard the run)."""
    directory = Path(directory)
    skipped = []
    for path in sorted((p for p in directory.glob("step*") if (p / COMPLETE).exists()), reverse=True):
        found = problems(path)
        if not found:
            if skipped:
                print(f"checkpoint: resuming from {path.name}; skipped " + "; ".join(skipped),
                      file=sys.stderr, flush=True)
            return path.name
        skipped.append(f"{path.name} ({', '.join(found)})")
    if skipped:
        raise CheckpointError(f"no valid checkpoint in {directory}: " + "; ".join(skipped))
    return None


def signature_mismatch(saved: dict, current: dict) -> list[str]:
    return [f"{k}: checkpoint {saved.get(k)!r} vs config {current.get(k)!r}"
            for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]


def load(directory: str | Path, engine, ema: EMA, signature: dict) -> int:
    """Restore the newest complete valid checkpoint; returns the step to continue from (0 when none)."""
    # Rank 0 decides, so that every rank loads the same tag and only one prints what was skipped.
    choice: list = [None]
    if dist.get_rank() == 0:
        try:
            choice = [choose_tag(directory)]
        except CheckpointError as err:
            choice = [err]
    dist.broadcast_object_list(choice, src=0)
    if isinstance(choice[0], CheckpointError):
        raise choice[0]
    tag = choice[0]
    if tag is None:
        return 0
    path = Path(directory) / tag
    extra = torch.load(path / f"aeris_rank{dist.get_rank()}.pt", weights_only=False)
    client = _peek_client_state(path)
    if client is not None:
        diff = signature_mismatch(client.get("signature", {}), signature)
        if diff:
            raise CheckpointError(f"checkpoint {path} is for another model or layout: " + "; ".join(diff))
    _, client = engine.load_checkpoint(str(directory), tag=tag)
    if client is None:
        raise CheckpointError(f"DeepSpeed could not load checkpoint {path}")
    ema.load_state_dict(extra["ema"])
    _set_rng_state(extra["rng"])
    return int(client["step"])


def _peek_client_state(path: Path) -> dict | None:
    """Read the client state before DeepSpeed touches the weights, to name a shape mismatch clearly."""
    files = sorted(path.glob("*model_states.pt"))
    if not files:
        return None
    state = torch.load(files[0], map_location="cpu", weights_only=False)
    return {k: state[k] for k in ("step", "signature") if k in state}
