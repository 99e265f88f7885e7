"""A training time budget that is a budget on any machine.

With ``train.max_minutes`` the run measures its own step time once the first steps (and ``torch.compile``)
are behind it, and fixes the total number of steps so that the run, start-up included, ends with the budget.
The learning-rate schedule is then fitted to that total, so a slower machine trains fewer steps but
finishes its schedule (the cosine reaches its floor) instead of being cut mid-decay.

The first plan is made once ``MIN_MEASURED`` steps are timed, and no earlier than the end of the schedule's
warm-up. Every ``REPLAN_EVERY`` steps after it the run re-plans from its recent step time, so a machine that
slows down (or speeds up) mid-run still ends with its budget. Each plan keeps the learning rate continuous: the
schedule's remaining progress is spread over the steps left (``fit_schedule``). The plan is stored in every
checkpoint: a resumed run keeps the plan it was given, re-plans no more (its clock started later) and
continues bit-identically. A run that still goes far past its budget stops at ``GRACE`` × the budget (at
least ``GRACE_MIN_S`` past it) with a checkpoint, and says so.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

SKIP = 3  # the first steps after a (re)start compile and warm caches: not representative
# Steps timed before the plan. A plan later than the warm-up's end is harmless: until then the cosine runs
# with the configured cap as its total, i.e. at its peak to within a fraction of a percent.
MIN_MEASURED = 40
REPLAN_EVERY = 50  # steps between re-plans, each from the mean time of the steps since the last one
REPLAN_MIN_CHANGE = 0.01  # a re-plan that moves the total by less (relative) is not worth a new schedule
MARGIN = 0.97  # of the time left: the final checkpoint and the weights are written after the last step
GRACE = 1.15  # hard stop, as a fraction of the budget, should the machine slow down after the plan …
GRACE_MIN_S = 60.0  # … but never less than this past it: a short budget must not be cut by one slow moment


class TimeBudget:
    """Decides, from measured step times, how many steps fit in ``minutes`` counted from ``t0``."""

    def __init__(self, minutes: float | None, max_steps: int, start_step: int, plan_before: int,
                 t0: float, planned: int | None = None, clock: Callable[[], float] = time.time):
        self.minutes = minutes
        self.max_steps = max_steps
        self.clock = clock
        self.deadline = t0 + 60 * minutes if minutes else math.inf
        self.planned = planned if minutes else None
        self.resumed = self.planned is not None  # a plan from a checkpoint: this process's clock started later
        # Plan once enough steps are timed, and not before the schedule's warm-up ends (the steps up to the plan
        # run with the cap as the cosine's total, i.e. at its peak).
        self.plan_at = max(plan_before, start_step + SKIP + MIN_MEASURED)
        self.start_step = start_step
        self.times: list[float] = []
        self.step_s = math.nan
        self.plans: list[tuple[int, int]] = []  # (step, total) of each plan this process made

    @property
    def total(self) -> int:
        """Steps the run is to make: the plan once made, else the configured maximum."""
        return self.planned if self.planned is not None else self.max_steps

    def record(self, step: int, seconds: float) -> None:
        """Record that ``step`` (1-based, just finished) took ``seconds``."""
        if step > self.start_step + SKIP:
            self.times.append(seconds)

    def due(self, step: int) -> bool:
        """Whether the run (re-)plans after ``step``: decided by step counts alone, the same on every rank."""
        if not self.minutes or self.resumed or step >= self.total:
            return False
        return step == (self.plan_at if not self.plans else self.plans[-1][0] + REPLAN_EVERY)

    def propose(self, step: int) -> int:
        """The total that fits the time left at the mean step time since the last plan (this rank's clock)."""
        self.step_s = statistics.fmean(self.times)  # the mean: periodic hiccups (GC, logging) cost time too
        self.times = []
        left = MARGIN * (self.deadline - self.clock())
        return int(min(self.max_steps, max(step + 1, step + left // self.step_s)))

    def accept(self, step: int, total: int) -> bool:
        """Take the ranks' agreed ``total``; False when it is too close to the plan in force to refit for."""
        keep = self.planned is not None and abs(total - self.planned) < REPLAN_MIN_CHANGE * self.planned
        self.planned = self.planned if keep else total
        self.plans.append((step, self.planned))
        return not keep

    def overrun(self) -> bool:
        """True once the wall time passes GRACE × the budget (the plan assumed a faster machine)."""
        return self.clock() > self.deadline + max(GRACE_MIN_S, (GRACE - 1) * 60 * (self.minutes or 0))


def fit_schedule(scheduler: object, steps_left: int) -> float | None:
    """Make DeepSpeed's LR scheduler (WarmupCosineLR, WarmupDecayLR) end ``steps_left`` steps from now, without
    a jump in the learning rate: the decay's progress so far is kept and its remainder spread over the steps
    left. Returns the scheduler's new total (kept in the plan: a resume restores it), or None without one."""
    if scheduler is None or not hasattr(scheduler, "total_num_steps"):
        return None
    warm, it, total = warmup_steps(scheduler), scheduler.last_batch_iteration, scheduler.total_num_steps
    # DeepSpeed's decay progress at iteration i is (i − warm + 1) / (total − warm)
    done = min(1.0, max(0.0, (it - warm + 1) / max(1, total - warm)))
    if done >= 1.0 or it < warm:  # nothing left to spread, or still warming up: only the end moves
        scheduler.total_num_steps = it + steps_left + 1
        return float(scheduler.total_num_steps)
    # A new (iteration, total) with the same progress now, reaching 1 after steps_left more steps.
    scheduler.last_batch_iteration = warm - 1 + done * steps_left / (1 - done)
    scheduler.total_num_steps = scheduler.last_batch_iteration + steps_left + 1
    return float(scheduler.total_num_steps)


def stretch_schedule(scheduler: object, total_steps: float) -> None:
    """Set the total of DeepSpeed's LR scheduler (WarmupCosineLR, WarmupDecayLR): the run's steps, or a
    resumed plan's ``fit_schedule`` total."""
    if scheduler is not None and hasattr(scheduler, "total_num_steps"):
        scheduler.total_num_steps = total_steps


def warmup_steps(scheduler: object) -> int:
    """Steps of the schedule's warm-up (0 when it has none): the plan is made no earlier than their end."""
    return int(getattr(scheduler, "warmup_num_steps", 0) or 0)
