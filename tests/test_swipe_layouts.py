"""SWiPe layouts train exactly like one process: loss, gradient norm and parameters over three steps.

Each world size runs all its layouts inside one spawned job (engine after engine) to keep the suite short.
Gradient clipping is on and active (threshold below the gradient norm), so a wrong loss scale or a
gradient reduced over the wrong group shows in the norm, not only in the parameters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ranks import run_ranks

CLIP = 0.05
GLOBAL_BATCH = 4


def _ds_config(dp: int, stage: int = 1, accumulation: int = 1) -> dict:
    from aeris_ds.config import load_ds_config

    ds = load_ds_config(f"ds_configs/zero{stage}_fp32.json")
    ds["gradient_clipping"] = CLIP
    ds["train_micro_batch_size_per_gpu"] = GLOBAL_BATCH // dp // accumulation
    ds["gradient_accumulation_steps"] = accumulation
    return ds


def _train_layouts(store: str, out: str, runs: list[tuple]) -> dict:
    """Runs of (name, layout, ZeRO stage, accumulation[, train overrides])."""
    from aeris_ds.config import load_config
    from aeris_ds.train import run

    results = {}
    for name, layout, stage, accumulation, *train in runs:
        cfg = load_config("tiny", {"data": {"store": store}, "layout": layout,
                                   "train": {"out_dir": f"{out}/{name}", **(train[0] if train else {})}})
        summary = run(cfg, _ds_config(layout.get("dp", 1), stage, accumulation))
        results[name] = [(r["loss"], r["grad_norm"]) for r in summary["history"]]
    return results


def _weights(out: Path, name: str) -> dict[str, torch.Tensor]:
    return torch.load(out / name / "weights.pt", weights_only=False)["params"]


@pytest.fixture(scope="module")
def reference(tiny_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    runs = [("single", {}, 1, 1), ("single_acc2", {}, 1, 2), ("single_zero0", {}, 0, 1)]
    (res,) = run_ranks(1, _train_layouts, str(tiny_store), str(out), runs, tmp=out / "ranks")
    return res, out


def _assert_same(res: dict, out: Path, name: str, ref: dict, ref_out: Path, ref_name: str = "single") -> None:
    got, want = np.array(res[name]), np.array(ref[ref_name])
    assert got.shape == (3, 2), f"{name}: expected 3 steps of (loss, grad norm), got {got.shape}"
    np.testing.assert_allclose(got[:, 0], want[:, 0], rtol=1e-5, err_msg=f"{name}: loss")
    np.testing.assert_allclose(got[:, 1], want[:, 1], rtol=1e-5, err_msg=f"{name}: gradient norm")
    assert want[0, 1] > CLIP, "clipping must be active for the test to see the gradient scale"
    a, b = _weights(out, name), _weights(ref_out, ref_name)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=f"{name}: parameter {key}")


def test_layout_reference_accumulation_matches(reference):
    """Two accumulated micro-batches of 2 equal one micro-batch of 4 (the batch accounting is right)."""
    res, out = reference
    _assert_same(res, out, "single_acc2", res, out)


# wp2_compiled: every block through torch.compile, its all-to-all between the compiled graphs.
TWO_RANKS = [("dp2", {"dp": 2}, 1, 1), ("pp2", {"pp": 2}, 1, 1), ("wp2", {"wp": 2}, 1, 1),
             ("sp2", {"sp": 2}, 1, 1), ("wp2_zero2", {"wp": 2}, 2, 1), ("sp2_zero3", {"sp": 2}, 3, 1),
             ("wp2_compiled", {"wp": 2}, 1, 1, {"compile": True})]
FOUR_RANKS = [("wp4", {"wp": 4}, 1, 1), ("sp4", {"sp": 4}, 1, 1), ("pp2_dp2", {"pp": 2, "dp": 2}, 1, 1),
              ("pp2_sp2", {"pp": 2, "sp": 2}, 1, 1), ("pp2_wp2", {"pp": 2, "wp": 2}, 1, 1),
              ("wp2_sp2", {"wp": 2, "sp": 2}, 1, 1), ("dp2_wp2", {"dp": 2, "wp": 2}, 1, 1),
              ("wp2_sp2_zero3", {"wp": 2, "sp": 2}, 3, 1)]


@pytest.mark.parametrize("world,runs", [(2, TWO_RANKS), (4, FOUR_RANKS)], ids=["2ranks", "4ranks"])
def test_swipe_layouts_match_single_process(world, runs, reference, tiny_store, tmp_path):
    ref, ref_out = reference
    results = run_ranks(world, _train_layouts, str(tiny_store), str(tmp_path), runs, tmp=tmp_path / "ranks")
    for name, *_ in runs:
        _assert_same(results[0], tmp_path, name, ref, ref_out)
