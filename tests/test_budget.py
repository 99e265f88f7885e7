"""A time budget is a budget: the run fits its step count to the measured step time, the LR schedule reaches
its floor at the last step, and a resume keeps the plan and continues bit-identically."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import pytest
import torch
from ranks import run_ranks

from aeris_ds.budget import MARGIN, MIN_MEASURED, REPLAN_EVERY, SKIP, TimeBudget, fit_schedule, stretch_schedule

MINUTES = 0.2  # 12 s, start-up included: a few hundred tiny steps
EVERY = 25


class Clock:
    """A wall clock the test moves by each step's duration."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def drive(budget: TimeBudget, clock: Clock, step_s, last: int = 10**6) -> list[tuple[int, int]]:
    """Steps of the given durations through the budget as the train loop takes them; the plans that changed."""
    changes = []
    step = budget.start_step
    while step < min(budget.total, last):
        step += 1
        clock.now += step_s(step)
        budget.record(step, step_s(step))
        if budget.due(step) and budget.accept(step, budget.propose(step)):
            changes.append((step, budget.planned))
    return changes


def test_plan_fills_the_time_left():
    clock = Clock()
    budget = TimeBudget(minutes=2.0, max_steps=10**6, start_step=0, plan_before=12, t0=clock.now - 60, clock=clock)
    assert budget.total == 10**6  # no plan before it is measured
    at = SKIP + MIN_MEASURED  # after the warm-up's 12 steps: enough steps must be timed
    changes = drive(budget, clock, lambda step: 5.0 if step <= SKIP else 0.5)  # compiling is slow
    # at the plan: 60 + 3 × 5 + 40 × 0.5 s used, the rest at 0.5 s per step (the slow first steps not counted)
    assert changes[0] == (at, at + int(MARGIN * (120 - 95) / 0.5))
    assert changes == changes[:1], "a steady machine needs no re-plan"
    assert budget.deadline - 60 * (1 - MARGIN) * 2 <= clock.now <= budget.deadline


def test_replan_follows_a_slower_machine():
    """The machine slows to half speed a third of the way in: the re-plans still end the run with its budget."""
    clock = Clock()
    budget = TimeBudget(minutes=10.0, max_steps=10**6, start_step=0, plan_before=20, t0=clock.now, clock=clock)
    changes = drive(budget, clock, lambda step: 0.5 if step < 400 else 1.0)
    assert changes[0][1] > 1100 and changes[-1][1] < 800, changes
    assert all(b[0] - a[0] >= REPLAN_EVERY for a, b in zip(changes, changes[1:]))
    assert budget.deadline - 60 * 10 * (1 - MARGIN) - 2 <= clock.now <= budget.deadline
    faster = TimeBudget(minutes=10.0, max_steps=10**6, start_step=0, plan_before=20, t0=clock.now, clock=clock)
    drive(faster, clock, lambda step: 1.0 if step < 200 else 0.5)
    assert faster.total > 900 and clock.now <= faster.deadline


def test_plan_is_capped_and_kept():
    clock = Clock()
    budget = TimeBudget(minutes=10.0, max_steps=100, start_step=0, plan_before=10, t0=clock.now, clock=clock)
    assert drive(budget, clock, lambda step: 0.01) == [(SKIP + MIN_MEASURED, 100)]
    resumed = TimeBudget(minutes=10.0, max_steps=10**6, start_step=50, plan_before=10, t0=clock.now, planned=80,
                         clock=clock)
    assert drive(resumed, clock, lambda step: 1.0) == [] and resumed.total == 80  # the checkpoint's plan stands
    unbudgeted = TimeBudget(None, 7, 0, 2, clock.now, clock=clock)
    assert drive(unbudgeted, clock, lambda step: 1.0) == [] and unbudgeted.total == 7


def test_fit_schedule_keeps_the_lr_continuous():
    """DeepSpeed's WarmupCosineLR refitted mid-decay, twice: no jump, monotone, the floor exactly at the end."""
    from deepspeed.runtime.lr_schedules import WarmupCosineLR

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = WarmupCosineLR(opt, total_num_steps=10**5, warmup_num_steps=20, cos_min_ratio=0.05)
    lrs = []

    def steps(n: int) -> None:
        for _ in range(n):
            opt.step()
            sched.step()
            lrs.append(opt.param_groups[0]["lr"])

    steps(43)
    fit_schedule(sched, 300 - 43)  # the first plan: 300 steps
    steps(100)
    fit_schedule(sched, 200 - 143)  # a slower machine: 200
    steps(200 - 143)
    assert lrs[-1] == pytest.approx(0.05, rel=1e-9) and lrs[-2] > 0.05 + 1e-6  # the floor at step 200, not before
    decay = lrs[20:]
    assert all(b <= a for a, b in zip(decay, decay[1:])), "the LR must decay monotonically"
    steepest = math.pi / 2 * 0.95 / (200 - 143)  # the cosine's largest step over the shortest remainder
    assert max(a - b for a, b in zip(decay, decay[1:])) <= 1.01 * steepest
    # the scheduler's state (a float iteration) and the plan's total give the same LRs after a resume
    state, total = sched.state_dict(), sched.total_num_steps
    again = WarmupCosineLR(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), total_num_steps=10**5,
                           warmup_num_steps=20, cos_min_ratio=0.05)
    again.load_state_dict(state)
    stretch_schedule(again, total)
    assert again.get_lr() == sched.get_lr()


def _train(store: str, out: str, steps: int, replan: bool = True, slow_from: int | None = None) -> dict:
    """A budgeted tiny run; ``replan=False`` keeps the first plan, ``slow_from``: each step from then on takes
    0.1 s more (a machine that slows down mid-run)."""
    import aeris_ds.budget
    import aeris_ds.train
    from aeris_ds.config import load_config, load_ds_config

    if not replan:
        aeris_ds.budget.REPLAN_EVERY = 10**9
    if slow_from is not None:
        fast = aeris_ds.train.train_step

        def slow(*args, **kwargs):
            result = fast(*args, **kwargs)
            if args[-1] >= slow_from:  # the step count, the loop's last argument
                time.sleep(0.1)
            return result

        aeris_ds.train.train_step = slow
    # One unbudgeted step first, so the budgeted run's start-up does not include DeepSpeed's one-time
    # JIT build of its comm op (which would eat the whole 12 s on a fresh venv).
    warm = load_config("tiny", {"data": {"store": store}, "train": {"out_dir": out + "_warm", "steps": 1}})
    aeris_ds.train.run(warm, load_ds_config(warm.train.ds_config))
    cfg = load_config("tiny", {"data": {"store": store},
                               "train": {"out_dir": out, "steps": steps, "max_minutes": MINUTES,
                                         "checkpoint_every": EVERY, "log_every": 1, "ema_length": 0.1}})
    summary = aeris_ds.train.run(cfg, load_ds_config(cfg.train.ds_config))
    return {k: v for k, v in summary.items() if k != "history"}


@pytest.fixture(scope="module")
def budgeted(tiny_store, tmp_path_factory):
    """A run that keeps its first plan (the resume test needs a plan that no later clock reading changes)."""
    tmp = tmp_path_factory.mktemp("budget")
    (summary,) = run_ranks(1, _train, str(tiny_store), str(tmp / "a"), 10**6, False, tmp=tmp / "ranks_a")
    return tmp, summary, tiny_store


def _floor() -> float:
    from aeris_ds.config import load_ds_config

    params = load_ds_config("ds_configs/zero1_fp32.json")
    return params["optimizer"]["params"]["lr"] * params["scheduler"]["params"]["cos_min_ratio"]


def _lrs_decay(run: Path) -> bool:
    lrs = [json.loads(line)["lr"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    peak = lrs.index(max(lrs))
    return all(b <= a for a, b in zip(lrs[peak:], lrs[peak + 1:]))


def test_replans_end_a_slowing_run_with_its_budget(tiny_store, tmp_path):
    """Steps become several times slower after the first plan: the run re-plans and still ends with its budget
    (a plan made once would run ~2× past it), its LR schedule complete at the floor."""
    (summary,) = run_ranks(1, _train, str(tiny_store), str(tmp_path / "s"), 10**6, True, 60, tmp=tmp_path / "r")
    assert summary["schedule_complete"] and summary["steps"] == summary["planned_steps"]
    first, last = summary["plans"][0][1], summary["plans"][-1][1]
    assert last < 0.7 * first, summary["plans"]
    assert summary["total_s"] <= 60 * MINUTES + 3.0, summary
    assert summary["final_lr"] == pytest.approx(_floor(), rel=1e-6)
    assert _lrs_decay(tmp_path / "s"), "the LR must decay monotonically through the re-plans"


def test_schedule_ends_with_the_budget(budgeted):
    tmp, summary, _ = budgeted
    assert summary["planned_steps"] < 10**6, "the budget did not fix the step count"
    assert summary["steps"] == summary["planned_steps"] and summary["schedule_complete"]
    assert summary["final_lr"] == pytest.approx(_floor(), rel=1e-6)
    assert _lrs_decay(tmp / "a"), "the LR must decay monotonically to the end"
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
    (resumed,) = run_ranks(1, _train, str(store), str(tmp / "b"), 10**7, False, tmp=tmp / "ranks_b")
    assert resumed["steps"] == summary["steps"]
    a = torch.load(tmp / "a" / "weights.pt", weights_only=False)
    b = torch.load(tmp / "b" / "weights.pt", weights_only=False)
    for key in ("params", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key} {name} differs after resume"
