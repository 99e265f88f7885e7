"""Checkpoints: DeepSpeed's engine state + our client state, committed atomically.

DeepSpeed writes ``<dir>/<tag>/`` (each rank its own files). Every rank then writes its RNG states beside
them and one rank per pipeline stage the EMA of its layers by parameter name (layout-independent); all ranks
meet at a barrier, and only then rank 0 writes ``<tag>/COMPLETE`` (the step and the size of every file of
the tag) and swaps the ``latest`` pointer with an atomic rename. A crash at any point of a save leaves
``latest`` on the last complete checkpoint. A restart checks the files of the newest complete tag against
that manifest and falls back to the next older valid one, saying what it skipped. A tag of another layout
or ZeRO stage is loaded through its universal conversion (see elastic.py).

Out of space: before a save, rank 0 removes tags left incomplete and checks that the filesystem has room for
one more checkpoint (the size of the previous one, or a lower bound from the parameter count for the first).
A write that still fails for want of space, on any rank, is agreed among all ranks after the writes: the
partial tag is removed and every rank raises the same OutOfSpaceError (printed once); ``latest`` stays on the
previous checkpoint and the rerun continues from it.
"""

from __future__ import annotations

import argparse
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

from aeris_ds import elastic
from aeris_ds.args import ArgumentParser, existing_path
from aeris_ds.ema import EMA
from aeris_ds.errors import CheckpointError, MissingPathError, OutOfSpaceError, UserError, out_of_space, run_command
from aeris_ds.outputs import atomic_replace, ensure_space, space_errors
from aeris_ds.weights import canonical

LATEST = "latest_complete"
COMPLETE = "COMPLETE"
EMA_FILE = "aeris_ema_layers"  # + "<first>-<last>.pt": the EMA of those layers, by parameter name


def _atomic_save(obj, path: Path) -> None:
    with atomic_replace(path) as tmp:
        torch.save(obj, tmp)


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


def save(directory: str | Path, engine, ema: EMA, step: int, signature: dict, keep: int = 2,
         plan: dict | None = None) -> Path:
    """``plan``: what the run decided for itself and must keep on resume (the time budget's total steps)."""
    directory = Path(directory)
    tag = f"step{step:08d}"
    rank = dist.get_rank()
    lower_bound = sum(_gather(_bytes_held(engine)))
    rerun = _on_rank0(make_room, directory, tag, lower_bound)
    client = {"step": step, "signature": signature, "zero_stage": engine.zero_optimization_stage(),
              "plan": plan or {}}
    failure = None
    try:
        engine.save_checkpoint(str(directory), tag=tag, client_state=client, save_latest=False)
    except (OSError, RuntimeError) as err:
        failure = out_of_space(err, directory / tag, rerun)
        if failure is None:
            raise
        dist.barrier()  # the one DeepSpeed's save ends with, where the other ranks wait
    if failure is None:
        try:
            with space_errors(directory / tag, rerun):
                _atomic_save({"rng": _rng_state(), "step": step}, directory / tag / f"aeris_rank{rank}.pt")
                if (engine.mpu.get_data_parallel_rank() if engine.mpu is not None else rank) == 0:  # once per stage
                    state = {canonical(n): t for n, t in ema.state_dict().items()}
                    layers = sorted({_layer(n) for n in state})
                    _atomic_save(state, directory / tag / f"{EMA_FILE}{layers[0]:03d}-{layers[-1]:03d}.pt")
        except OutOfSpaceError as err:
            failure = err
    failed = [f for f in _gather(failure) if f is not None]  # also the barrier after the writes
    if failed:
        if rank == 0:  # a partial tag would only take space; the previous one stays in charge
            shutil.rmtree(directory / tag, ignore_errors=True)
        raise OutOfSpaceError(failed[0].cause, rerun=failed[0].rerun, every_rank=True) from failure
    if rank == 0:
        files = {p.name: p.stat().st_size for p in sorted((directory / tag).iterdir()) if p.is_file()}
        with atomic_replace(directory / tag / COMPLETE) as marker:
            marker.write_text(json.dumps({"step": step, "world": dist.get_world_size(), "files": files}))
        with atomic_replace(directory / LATEST) as pointer:
            pointer.write_text(tag)
        complete = sorted(p for p in directory.glob("step*") if (p / COMPLETE).exists())
        for old in complete[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
            shutil.rmtree(elastic.universal_path(old), ignore_errors=True)
    dist.barrier()
    return directory / tag


def _gather(value) -> list:
    """``value`` of every rank, on every rank (object collective: any backend)."""
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def _bytes_held(engine) -> int:
    """A lower bound of this rank's share of a checkpoint: its weights, Adam's two fp32 moments and the fp32
    EMA, counted on one rank per copy of the weights (DeepSpeed's data-parallel rank 0)."""
    if (engine.mpu.get_data_parallel_rank() if engine.mpu is not None else dist.get_rank()) != 0:
        return 0
    return sum(getattr(p, "ds_numel", p.numel()) * (p.element_size() + 12) for p in engine.module.parameters())


def make_room(directory: Path, tag: str, lower_bound: int) -> str:
    """On rank 0 before a save: remove tags left incomplete (a kill or a full disk) and check the free space
    against the previous checkpoint's size (``lower_bound`` for the first). Returns what a rerun does."""
    for stale in directory.glob("step*"):
        if stale.is_dir() and not (stale / COMPLETE).exists():
            shutil.rmtree(stale, ignore_errors=True)
    complete = sorted(p for p in directory.glob("step*") if (p / COMPLETE).exists())
    rerun = f"training resumes from {complete[-1].name}" if complete else "training starts over"
    need = lower_bound
    if complete:
        try:
            need = sum(json.loads((complete[-1] / COMPLETE).read_text())["files"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # an old or unreadable manifest: the lower bound will do
    ensure_space(directory / tag, need, "checkpoint", rerun, every_rank=True)
    return rerun


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


def resolve(path: str | Path) -> Path:
    """The tag to start from: the given tag folder, or the newest valid tag of a run folder or its checkpoints/."""
    path = Path(path)
    if not path.exists():
        raise MissingPathError(f"checkpoint {path} does not exist")
    if (path / COMPLETE).exists():
        found = problems(path)
        if found:
            raise CheckpointError(f"checkpoint {path} is damaged: " + ", ".join(found))
        return path
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    tag = choose_tag(folder)
    if tag is None:
        raise CheckpointError(f"no complete checkpoint in {path} (expected a run folder, its checkpoints/ or a tag)")
    return folder / tag


def load(directory: str | Path, engine, ema: EMA, signature: dict,
         resume_from: str | Path | None = None) -> tuple[int, dict]:
    """Restore the newest complete valid checkpoint of ``directory``, else the one ``resume_from`` names;
    returns the step to continue from (0 when none) and the run's saved plan. A checkpoint of another layout,
    ZeRO stage or precision (train.bf16 auto on another kind of device) goes through its universal conversion:
    fp32 master weights and optimizer state, which every engine loads."""
    tag = _on_rank0(choose_tag, directory)  # every rank loads the same tag; one prints what was skipped
    if tag is not None:
        path = Path(directory) / tag
    elif resume_from is not None:
        path = _on_rank0(resolve, resume_from)
    else:
        return 0, {}
    states = elastic.model_states(path)
    saved = states.get("signature", {})
    engine_facts = ("layout", "precision")  # how the model is trained, not which model
    diff = signature_mismatch({k: v for k, v in saved.items() if k not in engine_facts},
                              {k: v for k, v in signature.items() if k not in engine_facts and k in saved})
    if diff:
        raise CheckpointError(f"checkpoint {path} is for another model: " + "; ".join(diff))
    stage = engine.zero_optimization_stage()
    same_engine = all(saved.get(k, signature.get(k)) == signature.get(k) for k in engine_facts)
    if same_engine and states.get("zero_stage", stage) == stage:
        _, client = engine.load_checkpoint(str(path.parent), tag=path.name)
        if client is None:
            raise CheckpointError(f"DeepSpeed could not load checkpoint {path}")
        extra = torch.load(path / f"aeris_rank{dist.get_rank()}.pt", weights_only=False)
    else:
        _on_rank0(elastic.convert, path)
        client = elastic.load(engine, path)
        # Training draws no global random numbers (noise comes from (seed, epoch, sample)): rank 0's will do.
        extra = torch.load(path / "aeris_rank0.pt", weights_only=False)
    _load_ema(ema, path, extra.get("ema"))
    _set_rng_state(extra["rng"])
    return int(client["step"]), dict(client.get("plan") or {})


def _layer(name: str) -> int:
    return int(canonical(name).split(".")[0])


def _load_ema(ema: EMA, path: Path, legacy: dict | None) -> None:
    """This rank's layers of the EMA, from the files of whichever stages held them."""
    files = list(path.glob(f"{EMA_FILE}*.pt"))
    if not files and legacy is not None:  # written before the EMA moved to per-stage files: same layout only
        return ema.load_state_dict(legacy)
    own = ema.state_dict()
    mine = {_layer(n) for n in own}
    state = {}
    for file in files:
        first, last = (int(x) for x in file.stem.removeprefix(EMA_FILE).split("-"))
        if any(first <= i <= last for i in mine):
            state.update(torch.load(file, weights_only=False))
    ema.load_state_dict({n: state[canonical(n)] for n in own if canonical(n) in state})


def _on_rank0(fn, *args):
    """fn(*args) on rank 0 while the others wait; its result, or its user error, reaches every rank."""
    result: list = [None]
    if dist.get_rank() == 0:
        try:
            result = [fn(*args)]
        except UserError as err:
            err.every_rank = True  # every rank raises it: rank 0 prints it
            result = [err]
    dist.broadcast_object_list(result, src=0)
    if isinstance(result[0], UserError):
        raise result[0]
    return result[0]


def main(argv: list[str] | None = None) -> None:
    """``aeris-ds checkpoint convert RUN_OR_TAG``: write the universal form of the run's newest complete tag."""
    parser = ArgumentParser(prog="aeris-ds checkpoint", description=elastic.__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="write the universal (layout-independent) form of a checkpoint")
    conv.add_argument("path", type=existing_path, help="run folder, its checkpoints/ folder, or one tag folder")
    args = parser.parse_args(argv)
    print(elastic.convert(resolve(args.path)))


if __name__ == "__main__":
    raise SystemExit(run_command(main))
