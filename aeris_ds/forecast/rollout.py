"""Autoregressive ensemble rollout, streamed step by step to a ForecastStore and resumable.

The driver knows nothing about the network: ``step_fn(state[B, ...], generators, valid_times) -> state[B, ...]``
advances a batch of rows — (init time, member) pairs, any mix of init times — from step k − 1 to step k;
``valid_times[b]`` (init + k·Δt) gives row b's forcings. The caller wraps sampler + network + residual update,
and step_fn must draw row b's randomness from ``generators[b]`` only. Each generator is seeded from
(seed, init time, member, step) alone, so a member's trajectory does not depend on which rows share its
batch, on history, or on whether the run was interrupted: a resumed run reproduces the
uninterrupted one bit for bit, provided step_fn's arithmetic is batch-invariant (elementwise ops are;
a GEMM may round differently for another batch size, which only happens when rows were left at
different steps).

Resume state: the model state after each step is kept losslessly in the store (``save_state``, raw
bits in the state's own dtype) before the step is marked complete; a resumed member restarts from
that, not from the float32 physical output.

Step k (1-based) is written at lead index k − 1: the store's leads are Δt, 2Δt, … (no lead 0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from aeris_ds.forecast.store import ForecastStore

StepFn = Callable[[Tensor, Sequence[torch.Generator], np.ndarray], Tensor]
Row = tuple[int, int]  # (init time index in the store, member)
Perturb = Callable[[np.datetime64, int, int, int], Tensor]  # (init time, member, seed, step) → state change


class RolloutError(RuntimeError):
    """Members whose state became non-finite; ``failures`` holds (init time, member, step)."""

    def __init__(self, failures: list[tuple[np.datetime64, int, int]]) -> None:
        self.failures = failures
        where = "; ".join(f"init {t}, member {m}, step {k}" for t, m, k in failures)
        super().__init__(
            f"non-finite state (NaN/inf) in {len(failures)} member(s): {where}; "
            "steps before these are in the store"
        )


def member_generator(seed: int, init_time: np.datetime64, member: int, step: int,
                     device: torch.device | str = "cpu") -> torch.Generator:
    """The generator for one member's step, a pure function of (seed, init time, member, step)."""
    init_ns = int(np.datetime64(init_time, "ns").astype(np.int64)) % 2**64
    entropy = np.random.SeedSequence([seed, init_ns, member, step]).generate_state(1, np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(entropy))


def advance(step_fn: StepFn, states: Tensor, inits: Sequence[np.datetime64], members: Sequence[int], step: int,
            lead: np.timedelta64, seed: int, perturb: Perturb | None = None) -> Tensor:
    """Step ``step`` (1-based, ending at ``lead`` = step·Δt) of rows (init time, member): each row's generator
    and its valid time init + lead, as every rollout of aeris-ds draws them. The step's input gets
    ``perturb(init, member, seed, step − 1)`` (0: the initial perturbation); its output is the network's, so a
    forecast carries no perturbation it has not yet evolved."""
    if perturb is not None:
        states = states + perturbations(perturb, inits, members, seed, step - 1)
    gens = [member_generator(seed, t, m, step, states.device) for t, m in zip(inits, members, strict=True)]
    return step_fn(states, gens, np.array([t + lead for t in inits]))


def perturbations(perturb: Perturb, inits: Sequence[np.datetime64], members: Sequence[int], seed: int,
                  step: int) -> Tensor:
    """The rows' perturbations at ``step``, stacked."""
    return torch.stack([perturb(t, m, seed, step) for t, m in zip(inits, members, strict=True)])


def _to_numpy(x: Tensor) -> np.ndarray:
    """Exact bits of a tensor as numpy (bfloat16, which numpy lacks, as its int16 bit pattern)."""
    x = x.detach().cpu()
    return (x.view(torch.int16) if x.dtype == torch.bfloat16 else x).numpy()


def _from_numpy(a: np.ndarray, like: Tensor) -> Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a)).to(like.device)
    return t.view(torch.bfloat16) if like.dtype == torch.bfloat16 else t


@torch.no_grad()  # a step's autograd graph would chain every step to the next and grow with lead time
def rollout(
    step_fn: StepFn,
    init_state: Tensor,
    n_steps: int,
    store: ForecastStore,
    rows: Sequence[Row],
    to_physical: Callable[[Tensor], dict[str, np.ndarray]],
    seed: int,
    progress: bool = True,
    perturb: Perturb | None = None,
) -> None:
    """Advance ``rows`` ((init index, member) pairs) ``n_steps`` steps in one batch, writing each step as
    it is produced.

    ``init_state[i]`` is row ``rows[i]``'s initial model state; rows already advanced in
    the store resume from their last completed step. ``to_physical(states[B, ...])`` returns WB2
    variables in physical units, each ``[B, ([level,] lat, lon)]``. A row whose new state is
    non-finite stops (its earlier steps stay written); the others finish, then RolloutError is raised.
    ``perturb(init time, member, seed, k − 1)`` is added to a row's state as step k's input, not to what step k
    writes (``advance``; a pure function of its arguments, so a resumed run is exact).
    """
    if not rows or init_state.shape[0] != len(rows):
        raise ValueError(f"init_state has {init_state.shape[0]} rows for {len(rows)} (init, member) rows")
    if n_steps > len(store.leads):
        raise ValueError(f"{n_steps} steps but the store {store.path} has only {len(store.leads)} leads")
    inits = [store.init_times[i] for i, _ in rows]
    store.ensure_state(tuple(init_state.shape[1:]), _to_numpy(init_state[:1]).dtype)
    done = [store.completed(i, m) for i, m in rows]
    states = init_state.clone()
    for r, (i, m) in enumerate(rows):
        if done[r] > 0:
            states[r] = _from_numpy(store.load_state(i, m, done[r]), init_state)
    alive = [True] * len(rows)
    failures: list[tuple[np.datetime64, int, int]] = []
    what = f"init {inits[0]}" if len(set(inits)) == 1 else f"{len(set(inits))} inits"
    for k in tqdm(range(min(done) + 1, n_steps + 1), desc=what, unit="step", disable=not progress):
        live = [r for r in range(len(rows)) if alive[r] and done[r] < k]
        if not live:
            break
        batch = states[live]
        new = advance(step_fn, batch, [inits[r] for r in live], [rows[r][1] for r in live], k, store.leads[k - 1],
                      seed, perturb)
        if new.shape != batch.shape or new.dtype != batch.dtype:
            raise ValueError(f"step_fn returned {tuple(new.shape)} {new.dtype}, "
                             f"expected {tuple(batch.shape)} {batch.dtype}")
        finite = torch.isfinite(new.reshape(len(live), -1)).all(dim=1).tolist()
        good = [j for j, ok in enumerate(finite) if ok]
        fields = to_physical(new[good]) if good else {}
        for n, j in enumerate(good):
            r = live[j]
            i, m = rows[r]
            store.write(i, k - 1, m, {name: arr[n] for name, arr in fields.items()})
            store.save_state(i, m, k, _to_numpy(new[j]))
            store.mark_complete(i, m, k)
            states[r] = new[j]
        for j, ok in enumerate(finite):
            if not ok:
                alive[live[j]] = False
                failures.append((inits[live[j]], rows[live[j]][1], k))
    if failures:
        raise RolloutError(failures)
