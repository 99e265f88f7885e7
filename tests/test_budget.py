"""A time budget is a budget: the run fits its step count to the measured step time, the LR schedule reaches
its floor at the last step, and a resume keeps the plan and continues bit-identically."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import torch
from ranks import run_ranks

from aeris_ds.budget import MARGIN, MIN_MEASURED, SKIP, TimeBudget

MINUTES = 0.2  # 12 s, start-up included: a few hundred tiny steps
EVERY = 25


def test_plan_fills_the_time_left():
    budget = TimeBudget(minutes=2.0, max_steps=10**6, start_step=0, plan_before=12, t0=time.time() - 60)
    assert budget.total == 10**6  # no plan before it is measured
    at = SKIP + MIN_MEASURED  # after the warm-up's 12 steps: enough steps must be timed
    plans = [budget.observe(step, 0.5 if step > SKIP else 5.0) for step in range(1, at + 1)]  # compiling is slow
    assert plans[:-1] == [None] * (at - 1)
    # ~60 s left at 0.5 s per step (the slow first steps are not counted), less the margin
    assert abs(plans[-1] - (at + MARGIN * 60 / 0.5)) <= 2
    assert budget.observe(at + 1, 0.5) is None  # planned once


def test_plan_is_capped_and_kept():
    budget = TimeBudget(minutes=10.0, max_steps=100, start_step=0, plan_before=10, t0=time.time())
    assert [budget.observe(s, 0.01) for s in range(1, SKIP + MIN_MEASURED + 1)][-1] == 100
    resumed = TimeBudget(minutes=10.0, max_steps=10**6, start_step=50, plan_before=10, t0=time.time(), planned=80)
    assert resumed.total == 80 and resumed.observe(60, 1.0) is None
    unbudgeted = TimeBudget(None, 7, 0, 2, time.time())
    assert [unbudgeted.observe(s, 1.0) for s in range(1, 20)] == [None] * 19 and unbudgeted.total == 7


def _train(store: str, out: str, steps: int) -> dict:
    from aeris_ds.config import load_config, load_ds_config
    from aeris_ds.train import run

    # One unbudgeted step first, so the budgeted run's start-up does not include DeepSpeed's one-time
    # JIT build of its comm op (which would eat the whole 12 s on a fresh venv).
    warm = load_config("tiny", {"data": {"store": store}, "train": {"out_dir": out + "_warm", "steps": 1}})
    run(warm, load_ds_config(warm.train.ds_config))
    cfg = load_config("tiny", {"data": {"store": store},
                               "train": {"out_dir": out, "steps": steps, "max_minutes": MINUTES,
                                         "checkpoint_every": EVERY, "log_every": 1}})
    summary = run(cfg, load_ds_config(cfg.train.ds_config))
    return {k: v for k, v in summary.items() if k != "history"}


@pytest.fixture(scope="module")
def budgeted(tiny_store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("budget")
    (summary,) = run_ranks(1, _train, str(tiny_store), str(tmp / "a"), 10**6, tmp=tmp / "ranks_a")
    return tmp, summary, tiny_store


def test_schedule_ends_with_the_budget(budgeted):
    from aeris_ds.config import load_ds_config

    tmp, summary, _ = budgeted
    assert summary["planned_steps"] < 10**6, "the budget did not fix the step count"
    assert summary["steps"] == summary["planned_steps"] and summary["schedule_complete"]
    params = load_ds_config("ds_configs/zero1_fp32.json")
    floor = params["optimizer"]["params"]["lr"] * params["scheduler"]["params"]["cos_min_ratio"]
    records = [json.loads(line) for line in (tmp / "a" / "metrics.jsonl").read_text().splitlines()]
    assert summary["final_lr"] == pytest.approx(floor, rel=1e-6)
    lrs = [r["lr"] for r in records]
    peak = lrs.index(max(lrs))
    assert all(b <= a for a, b in zip(lrs[peak:], lrs[peak + 1:])), "the LR must decay monotonically to the end"
    assert json.loads((tmp / "a" / "summary.json").read_text())["planned_steps"] == summary["planned_steps"]


def test_resume_keeps_the_plan(budgeted):
    tmp, summary, store = budgeted
    tags = sorted((tmp / "a" / "checkpoints").glob("step*"))
    middle = [t for t in tags if int(t.name[4:]) < summary["steps"]][-1]
    assert int(middle.name[4:]) > SKIP + MIN_MEASURED, "the checkpoint must come after the plan"
    (tmp / "b" / "checkpoints").mkdir(parents=True)
    shutil.copytree(middle, tmp / "b" / "checkpoints" / middle.name)
    (tmp / "b" / "checkpoints" / "latest_complete").write_text(middle.name)
    # A much larger cap, and a budget the resumed run's own clock could never meet: the saved plan decides.
    (resumed,) = run_ranks(1, _train, str(store), str(tmp / "b"), 10**7, tmp=tmp / "ranks_b")
    assert resumed["steps"] == summary["steps"]
    a = torch.load(tmp / "a" / "weights.pt", weights_only=False)
    b = torch.load(tmp / "b" / "weights.pt", weights_only=False)
    for key in ("params", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key} {name} differs after resume"
