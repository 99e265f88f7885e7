"""ZeRO-0/1/2/3 on two data-parallel ranks train exactly like one process on the same global batch.

Both ranks of each run hold half the global batch; loss, gradient norm (clipping active) and the final
parameters must equal the single-process run. ZeRO-3 partitions even the tiny model's parameters
(ds_configs/zero3_fp32.json sets stage3_param_persistence_threshold to 0).
"""

from __future__ import annotations

import pytest
from ranks import run_ranks
from test_swipe_layouts import _assert_same, _train_layouts

STAGES = [0, 1, 2, 3]


@pytest.fixture(scope="module")
def zero_runs(tiny_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("zero")
    (ref,) = run_ranks(1, _train_layouts, str(tiny_store), str(out), [("single", {}, 1, 1)], tmp=out / "ref")
    runs = [(f"dp2_zero{stage}", {"dp": 2}, stage, 1) for stage in STAGES]
    results = run_ranks(2, _train_layouts, str(tiny_store), str(out), runs, tmp=out / "ranks")
    return results, ref, out


@pytest.mark.parametrize("stage", STAGES, ids=[f"zero{s}" for s in STAGES])
def test_zero_stage_on_two_ranks_matches_single_process(stage, zero_runs):
    results, ref, out = zero_runs
    for rank, res in enumerate(results):  # every rank logs the same global loss and norm
        assert res[f"dp2_zero{stage}"] == results[0][f"dp2_zero{stage}"], f"rank {rank} disagrees"
    _assert_same(results[0], out, f"dp2_zero{stage}", ref, out)
