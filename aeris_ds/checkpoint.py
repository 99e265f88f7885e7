"""Checkpoints: DeepSpeed's engine state + our client state, committed atomically.

DeepSpeed writes ``<dir>/<tag>/`` (each rank its own files). Every rank then writes its EMA and RNG states
beside them, all ranks meet at a barrier, and only then rank 0 writes ``<tag>/COMPLETE`` and swaps the
``latest`` pointer with an atomic rename. A crash at any point of a save leaves ``latest`` on the last
complete checkpoint, which is what a restart loads.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from aeris_ds.ema import EMA

LATEST = "latest_complete"


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


def save(directory: str | Path, engine, ema: EMA, step: int, signature: dict, keep: int = 2) -> Path:
    directory = Path(directory)
    tag = f"step{step:08d}"
    client = {"step": step, "signature": signature}
    engine.save_checkpoint(str(directory), tag=tag, client_state=client, save_latest=False)
    rank = dist.get_rank()
    _atomic_save({"ema": ema.state_dict(), "rng": _rng_state(), "step": step}, directory / tag / f"aeris_rank{rank}.pt")
    dist.barrier()
    if rank == 0:
        (directory / tag / "COMPLETE").write_text(str(step))
        pointer = directory / f".{LATEST}.tmp"
        pointer.write_text(tag)
        os.replace(pointer, directory / LATEST)
        complete = sorted(p for p in directory.glob("step*") if (p / "COMPLETE").exists())
        for old in complete[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return directory / tag


def signature_mismatch(saved: dict, current: dict) -> list[str]:
    return [f"{k}: checkpoint {saved.get(k)!r} vs config {current.get(k)!r}"
            for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]


def load(directory: str | Path, engine, ema: EMA, signature: dict) -> int:
    """Restore the last complete checkpoint; returns the step to continue from (0 when none)."""
    tag = latest_tag(directory)
    if tag is None:
        return 0
    path = Path(directory) / tag
    extra = torch.load(path / f"aeris_rank{dist.get_rank()}.pt", weights_only=False)
    client = _peek_client_state(path)
    if client is not None:
        diff = signature_mismatch(client.get("signature", {}), signature)
        if diff:
            raise ValueError(f"checkpoint {path} is for another model or layout: " + "; ".join(diff))
    _, client = engine.load_checkpoint(str(directory), tag=tag)
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
