"""Exact resume: a run SIGKILLed mid-training and restarted gives bit-identical fp32 losses, a save cut
short never replaces the last complete checkpoint, a damaged latest checkpoint falls back to the previous
one, metrics.jsonl holds each step once, and a checkpoint of another model shape is refused."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from aeris_ds.checkpoint import LATEST, latest_tag
from aeris_ds.config import load_config

STEPS = 12
EVERY = 2


def _write_config(path: Path, store: Path, **model) -> Path:
    cfg = load_config("tiny", {"data": {"store": str(store)}, "model": model,
                               "train": {"checkpoint_every": EVERY, "log_every": 1}})
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


def _command(config: Path, store: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "aeris_ds.train", "--config", str(config), "--store", str(store),
            "--out", str(out), "--steps", str(STEPS)]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}


def _train(config: Path, store: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(_command(config, store, out), env=_env(), capture_output=True, text=True, timeout=300)


def _records(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _losses(out: Path) -> dict[int, float]:
    """The loss of each step, checking that every step is logged once (a resume drops the redone ones)."""
    steps = [r["step"] for r in _records(out)]
    assert steps == sorted(set(steps)), f"steps logged twice or out of order: {steps}"
    return {r["step"]: r["loss"] for r in _records(out)}


@pytest.fixture(scope="module")
def uninterrupted(tiny_store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    config = _write_config(tmp / "tiny.yaml", tiny_store)
    done = _train(config, tiny_store, tmp / "straight")
    assert done.returncode == 0, done.stderr[-3000:]
    return config, tmp


def _kill_after(config: Path, store: Path, out: Path, step: int) -> int:
    """Start a run and SIGKILL it once it has logged ``step``; returns how many records it logged."""
    proc = subprocess.Popen(_command(config, store, out), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if any(r["step"] >= step for r in _records(out)):
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"run was not killed mid-training:\n{proc.stderr.read()[-3000:]}"
    records = _records(out)
    assert records[-1]["step"] < STEPS, "the killed run finished before the kill: nothing to resume"
    return len(records)


def _fake_interrupted_save(ckpt: Path) -> None:
    """What a crash inside save() can leave: a newer tag with a truncated state file, no COMPLETE marker,
    and the pointer's temporary file written but not yet renamed over the pointer."""
    tag = latest_tag(ckpt)
    newer = f"step{int(tag.removeprefix('step')) + EVERY:08d}"
    shutil.copytree(ckpt / tag, ckpt / newer, dirs_exist_ok=True)
    (ckpt / newer / "COMPLETE").unlink()
    for state in (ckpt / newer).glob("*model_states.pt"):
        state.write_bytes(state.read_bytes()[:100])
    (ckpt / f".{LATEST}.tmp").write_text(newer)


def test_resume_after_sigkill_is_bit_identical(uninterrupted, tiny_store):
    config, tmp = uninterrupted
    out = tmp / "killed"
    _kill_after(config, tiny_store, out, step=3)
    ckpt = out / "checkpoints"
    tag = latest_tag(ckpt)
    assert tag is not None and (ckpt / tag / "COMPLETE").exists()
    _fake_interrupted_save(ckpt)

    resumed = _train(config, tiny_store, out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    want = _losses(tmp / "straight")
    assert sorted(want) == list(range(1, STEPS + 1))
    assert _losses(out) == want  # bit-identical fp32, each step once


def test_damaged_latest_checkpoint_resumes_from_previous(uninterrupted, tiny_store):
    config, tmp = uninterrupted
    out = tmp / "damaged"
    shutil.copytree(tmp / "straight", out)
    ckpt = out / "checkpoints"
    latest, previous = f"step{STEPS:08d}", f"step{STEPS - EVERY:08d}"
    assert latest_tag(ckpt) == latest and (ckpt / previous / "COMPLETE").exists()
    (ckpt / latest / "aeris_rank0.pt").unlink()  # one rank's file of the latest checkpoint is lost

    resumed = _train(config, tiny_store, out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {previous}; skipped {latest} (aeris_rank0.pt missing)" in resumed.stderr
    assert _losses(out) == _losses(tmp / "straight")  # steps redone from the previous one, bit-identical
    got = torch.load(out / "weights.pt", weights_only=False)
    want = torch.load(tmp / "straight" / "weights.pt", weights_only=False)
    for kind in ("params", "ema"):
        assert got[kind].keys() == want[kind].keys()
        for name, value in want[kind].items():
            assert torch.equal(got[kind][name], value), (kind, name)


def test_resume_refuses_checkpoint_of_another_model_shape(uninterrupted, tiny_store):
    config, tmp = uninterrupted
    out = tmp / "reshaped"
    shutil.copytree(tmp / "straight", out)
    before = len(_records(out))
    wider = _write_config(tmp / "wider.yaml", tiny_store, dim=64)
    run = _train(wider, tiny_store, out)
    assert run.returncode == 2
    assert "error: checkpoint" in run.stderr and "another model" in run.stderr, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert "'dim': 32" in run.stderr and "'dim': 64" in run.stderr, "the error must name the mismatch"
    assert len(_records(out)) == before, "no step may run before the mismatch is reported"
