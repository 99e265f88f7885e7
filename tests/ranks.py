"""Run a function on N local ranks (gloo on CPU), as the deepspeed launcher would, and collect results."""

from __future__ import annotations

import os
import socket
import traceback
from pathlib import Path

import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: Path, fn, args) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    try:
        result = fn(*args)
        torch.save({"ok": result}, out / f"rank{rank}.pt")
    except BaseException:
        torch.save({"error": traceback.format_exc()}, out / f"rank{rank}.pt")
        raise
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def run_ranks(world: int, fn, *args, tmp: Path, timeout: float = 600) -> list:
    """fn(*args) on `world` ranks; returns each rank's result, re-raising the first rank error."""
    tmp.mkdir(parents=True, exist_ok=True)
    # forkserver: ranks fork from a clean server process, not from pytest, which may hold threads (JAX's)
    # that make a plain fork unsafe; the server imports the heavy modules once for every later job.
    mp.set_forkserver_preload(["torch", "deepspeed", "aeris_ds.train"])
    ctx = mp.start_processes(_worker, args=(world, _free_port(), tmp, fn, args), nprocs=world, join=False,
                             start_method="forkserver")
    try:
        while not ctx.join(timeout=timeout):
            pass
    except Exception as err:
        for rank in range(world):
            path = tmp / f"rank{rank}.pt"
            if path.exists() and "error" in (res := torch.load(path, weights_only=False)):
                raise AssertionError(f"rank {rank} failed:\n{res['error']}") from err
        raise
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False)["ok"] for r in range(world)]
