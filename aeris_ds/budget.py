"""A training time budget that is a budget on any machine.

With ``train.max_minutes`` the run measures its own step time once the first steps (and ``torch.compile``)
are behind it, and fixes the total number of steps so that the run, start-up included, ends with the budget.
The learning-rate schedule is then stretched to that total, so a slower machine trains fewer steps but
finishes its schedule (the cosine reaches its floor) instead of being cut mid-decay.

The plan is made once ``MIN_MEASURED`` steps are timed, and no earlier than the end of the schedule's
warm-up, so the steps before it hardly depend on it. It is stored in every checkpoint: a resumed run keeps the
plan it was given and continues bit-identically. A run that goes on far past its budget (the machine slowed
down after the plan) stops at ``GRACE`` × the budget (at least ``GRACE_MIN_S`` past it) with a checkpoint, and
says so.
"""

from __future__ import annotations

import math
import statistics
import time

SKIP = 3  # the first steps after a (re)start compile and warm caches: not representative
# Steps timed before the plan. A plan later than the warm-up's end is harmless: until then the cosine runs
# with the configured cap as its total, i.e. at its peak to within a fraction of a percent.
MIN_MEASURED = 40
MARGIN = 0.97  # of the time left: the final checkpoint and the weights are written after the last step
GRACE = 1.15  # hard stop, as a fraction of the budget, should the machine slow down after the plan …
GRACE_MIN_S = 60.0  # … but never less than this past it: a short budget must not be cut by one slow moment


class TimeBudget:
    """Decides, from measured step times, how many steps fit in ``minutes`` counted from ``t0``."""

    def __init__(self, minutes: float | None, max_steps: int, start_step: int, plan_before: int,
                 t0: float, planned: int | None = None):
        self.minutes = minutes
        self.max_steps = max_steps
        self.deadline = t0 + 60 * minutes if minutes else math.inf
        self.planned = planned if minutes else None
        # Plan once enough steps are timed, and not before the schedule's warm-up ends (the steps up to the plan
        # run with the cap as the cosine's total, i.e. at its peak).
        self.plan_at = max(plan_before, start_step + SKIP + MIN_MEASURED)
        self.start_step = start_step
        self.times: list[float] = []
        self.step_s = math.nan

    @property
    def total(self) -> int:
        """Steps the run is to make: the plan once made, else the configured maximum."""
        return self.planned if self.planned is not None else self.max_steps

    def observe(self, step: int, seconds: float) -> int | None:
        """Record that ``step`` (1-based, just finished) took ``seconds``; returns the plan when it is made now."""
        if self.planned is not None or not self.minutes:
            return None
        if step > self.start_step + SKIP:
            self.times.append(seconds)
        if step < self.plan_at:
            return None
        self.step_s = statistics.fmean(self.times)  # the mean: periodic hiccups (GC, logging) cost time too
        left = MARGIN * (self.deadline - time.time())
        self.planned = int(min(self.max_steps, max(step + 1, step + left // self.step_s)))
        return self.planned

    def overrun(self) -> bool:
        """True once the wall time passes GRACE × the budget (the plan assumed a faster machine)."""
        return time.time() > self.deadline + max(GRACE_MIN_S, (GRACE - 1) * 60 * (self.minutes or 0))


def stretch_schedule(scheduler: object, total_steps: int) -> None:
    """Make DeepSpeed's LR scheduler (WarmupCosineLR, WarmupDecayLR) end at ``total_steps``."""
    if scheduler is not None and hasattr(scheduler, "total_num_steps"):
        scheduler.total_num_steps = total_steps


def warmup_steps(scheduler: object) -> int:
    """Steps of the schedule's warm-up (0 when it has none): the plan is made no earlier than their end."""
    return int(getattr(scheduler, "warmup_num_steps", 0) or 0)
