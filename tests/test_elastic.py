"""Elastic resume: 3 steps on layout A, a checkpoint, 3 more on layout B (another layout and/or ZeRO stage)
equal 6 uninterrupted single-process steps (losses, gradient norms, final parameters and EMA, fp32); a
conversion killed with SIGKILL leaves the source as it was; a checkpoint of another model shape is refused.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ranks import run_ranks
from test_swipe_layouts import CLIP, _ds_config

STEPS = 6
REF = "single"
# (name, layout, ZeRO stage, steps, resume from): A runs 3 steps and saves; B continues to 6.
ONE_RANK = [(REF, {}, 1, STEPS, None)]
FOUR_RANKS = [("wp2sp2", {"wp": 2, "sp": 2}, 0, 3, None)]  # ZeRO-0: Adam state outside ds_to_universal's reach
TWO_RANKS = [("1_to_wp2", {"wp": 2}, 0, STEPS, f"{REF}/checkpoints/step00000003"),  # into a ZeRO-0 engine
             ("wp2sp2_to_pp2", {"pp": 2}, 1, STEPS, "wp2sp2"),
             ("pp2", {"pp": 2}, 1, 3, None), ("pp2_to_dp2", {"dp": 2}, 1, STEPS, "pp2"),
             ("zero3_wp2", {"wp": 2}, 3, 3, None),
             ("zero1_pp2_to_zero2_sp2", {"sp": 2}, 2, STEPS, "pp2")]
ONE_RANK_AFTER = [("zero3_wp2_to_zero1_1", {}, 1, STEPS, "zero3_wp2")]
PAIRS = {"1_to_wp2": REF, "wp2sp2_to_pp2": "wp2sp2", "pp2_to_dp2": "pp2", "zero3_wp2_to_zero1_1": "zero3_wp2",
         "zero1_pp2_to_zero2_sp2": "pp2"}


def _config(store: str, out: str, name: str, layout: dict, steps: int, resume: str | None, train: dict | None = None,
            **model):
    from aeris_ds.config import load_config

    return load_config("tiny", {"data": {"store": store}, "layout": layout, "model": model,
                                "train": {"out_dir": f"{out}/{name}", "steps": steps, "checkpoint_every": 3,
                                          "resume_from": resume and f"{out}/{resume}", **(train or {})}})


def _ds(layout: dict, stage: int) -> dict:
    ds = _ds_config(layout.get("dp", 1), stage)
    ds["scheduler"]["params"]["total_num_steps"] = STEPS  # the A runs stop at 3 on the same schedule
    return ds


def _train(store: str, out: str, runs: list, reshaped: str | None = None) -> dict:
    from aeris_ds.errors import CheckpointError
    from aeris_ds.train import run

    results = {}
    for name, layout, stage, steps, resume, *train in runs:
        summary = run(_config(store, out, name, layout, steps, resume, *train), _ds(layout, stage))
        results[name] = [(r["loss"], r["grad_norm"]) for r in summary["history"]]
    if reshaped:  # the same checkpoint into a wider model, on another layout: refused before any step
        try:
            run(_config(store, out, "reshaped", {}, STEPS, reshaped, dim=64), _ds({}, 1))
        except CheckpointError as err:
            results["reshaped"] = str(err)
    return results


@pytest.fixture(scope="module")
def elastic_runs(tiny_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("elastic")
    results = {}
    for world, runs, reshaped in ((1, ONE_RANK, None), (4, FOUR_RANKS, None), (2, TWO_RANKS, None),
                                  (1, ONE_RANK_AFTER, "wp2sp2")):
        results.update(run_ranks(world, _train, str(tiny_store), str(out), runs, reshaped,
                                 tmp=out / f"ranks{world}_{runs[0][0]}")[0])
    return results, out


def _final(out: Path, name: str) -> dict[str, dict[str, torch.Tensor]]:
    return torch.load(out / name / "weights.pt", weights_only=False)


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_resume_on_another_layout_matches_uninterrupted(elastic_runs, pair):
    results, out = elastic_runs
    got = np.array(results[PAIRS[pair]][:3] + results[pair])
    want = np.array(results[REF])
    assert got.shape == want.shape == (STEPS, 2), f"{pair}: expected {STEPS} steps of (loss, norm), got {got.shape}"
    assert want[0, 1] > CLIP, "clipping must be active for the test to see the gradient scale"
    np.testing.assert_allclose(got[:, 0], want[:, 0], rtol=1e-5, err_msg=f"{pair}: loss")
    np.testing.assert_allclose(got[:, 1], want[:, 1], rtol=1e-5, err_msg=f"{pair}: gradient norm")
    a, b = _final(out, pair), _final(out, REF)
    for kind in ("params", "ema"):
        assert a[kind].keys() == b[kind].keys()
        for key in a[kind]:
            torch.testing.assert_close(a[kind][key], b[kind][key], rtol=1e-5, atol=1e-6, msg=f"{pair}: {kind} {key}")


# train.bf16 auto resolves per device: a run resumed on another kind continues in that precision from the fp32
# master weights and optimizer state of the universal conversion.
PRECISION_RUNS = [("bf16", {}, 1, 3, None, {"bf16": True}), ("bf16_to_fp32", {}, 1, STEPS, "bf16", {"bf16": False}),
                  ("fp32_to_bf16", {}, 1, STEPS, f"{REF}/checkpoints/step00000003", {"bf16": True})]


@pytest.mark.parametrize("pair", [("bf16", "bf16_to_fp32"), (REF, "fp32_to_bf16")])
def test_resume_in_another_precision_continues_the_run(elastic_runs, tiny_store, pair):
    results, out = elastic_runs
    if "bf16" not in results:  # once for both pairs
        results.update(run_ranks(1, _train, str(tiny_store), str(out), PRECISION_RUNS, tmp=out / "ranks_bf16")[0])
    first, resumed = pair
    got, want = np.array(results[first][:3] + results[resumed]), np.array(results[REF])
    assert got.shape == want.shape == (STEPS, 2), f"{resumed}: expected {STEPS} steps, got {got.shape}"
    np.testing.assert_allclose(got, want, rtol=2e-2, err_msg=f"{resumed}: losses and gradient norms")
    assert not np.array_equal(got, want), "a bf16 stretch must change the arithmetic"
    summary = (out / resumed / "summary.json").read_text()
    assert f'"precision": "{"fp32" if resumed.endswith("fp32") else "bf16"}"' in summary
    a, b = _final(out, resumed), _final(out, REF)
    for key in a["params"]:
        torch.testing.assert_close(a["params"][key], b["params"][key], rtol=0, atol=5e-3, msg=f"{resumed}: {key}")


def test_resume_refuses_another_model_shape_naming_fields(elastic_runs):
    message = elastic_runs[0].get("reshaped", "")
    assert "another model" in message and "model:" in message, message
    assert "'dim': 32" in message and "'dim': 64" in message, "the error must name the differing fields"


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_sigkill_during_conversion_leaves_source_usable(elastic_runs, tmp_path):
    _, out = elastic_runs
    ckpt = tmp_path / "checkpoints"
    tag = ckpt / "step00000003"
    import shutil

    shutil.copytree(out / "pp2" / "checkpoints" / tag.name, tag)
    before = _digest(tag)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "aeris_ds.cli", "checkpoint", "convert", str(tag)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if any(work.is_dir() and any(work.rglob("*.pt")) for work in (ckpt / "universal").glob(".*.tmp-*")):
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.001)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"conversion was not killed midway:\n{proc.stderr.read()[-2000:]}"
    assert not (ckpt / "universal" / tag.name).exists(), "a killed conversion must not look complete"
    assert _digest(tag) == before, "the source checkpoint changed"
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert list((ckpt / "universal").iterdir()) == [ckpt / "universal" / tag.name], "stale temporary left behind"
    converted = ckpt / "universal" / tag.name / "zero"
    reference = torch.load(out / "pp2" / "weights.pt", weights_only=False)["params"]
    for name, value in reference.items():
        torch.testing.assert_close(torch.load(converted / name / "fp32.pt", weights_only=False)["param"], value)
