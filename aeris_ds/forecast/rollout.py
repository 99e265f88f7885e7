"""Autoregressive ensemble rollout, streamed step by step to a ForecastStore and resumable.

The driver knows nothing about the network: ``step_fn(state[M, ...], generators, k) -> state[M, ...]``
advances a batch of members from step k − 1 to step k (k tells the
valid time of the forcings) (the caller wraps sampler + network + residual update) and
must draw row b's randomness from ``generators[b]`` only. Each generator is seeded from
(seed, init time, member, step) alone, so a member's trajectory does not depend on which members
share its batch, on history, or on whether the run was interrupted: a resumed run reproduces the
uninterrupted one bit for bit, provided step_fn's arithmetic is batch-invariant (elementwise ops are;
a GEMM may round differently for another batch size, which only happens when members were left at
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

StepFn = Callable[[Tensor, Sequence[torch.Generator], int], Tensor]


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
    init_idx: int,
    members: Sequence[int],
    to_physical: Callable[[Tensor], dict[str, np.ndarray]],
    seed: int,
    progress: bool = True,
) -> None:
    """Advance ``members`` of one init time ``n_steps`` steps, writing each step as it is produced.

    ``init_state[i]`` is member ``members[i]``'s initial model state; members already advanced in
    the store resume from their last completed step. ``to_physical(states[B, ...])`` returns WB2
    variables in physical units, each ``[B, ([level,] lat, lon)]``. A member whose new state is
    non-finite stops (its earlier steps stay written); the others finish, then RolloutError is raised.
    """
    if not members or init_state.shape[0] != len(members):
        raise ValueError(f"init_state has {init_state.shape[0]} rows for {len(members)} members")
    if n_steps > len(store.leads):
        raise ValueError(f"{n_steps} steps but the store {store.path} has only {len(store.leads)} leads")
    init_time = store.init_times[init_idx]
    store.ensure_state(tuple(init_state.shape[1:]), _to_numpy(init_state[:1]).dtype)
    done = [store.completed(init_idx, m) for m in members]
    states = init_state.clone()
    for i, m in enumerate(members):
        if done[i] > 0:
            states[i] = _from_numpy(store.load_state(init_idx, m, done[i]), init_state)
    alive = [True] * len(members)
    failures: list[tuple[np.datetime64, int, int]] = []
    steps = range(min(done) + 1, n_steps + 1)
    for k in tqdm(steps, desc=f"init {init_time}", unit="step", disable=not progress):
        rows = [i for i in range(len(members)) if alive[i] and done[i] < k]
        if not rows:
            break
        gens = [member_generator(seed, init_time, members[i], k, states.device) for i in rows]
        batch = states[rows]
        new = step_fn(batch, gens, k)
        if new.shape != batch.shape or new.dtype != batch.dtype:
            raise ValueError(f"step_fn returned {tuple(new.shape)} {new.dtype}, "
                             f"expected {tuple(batch.shape)} {batch.dtype}")
        finite = torch.isfinite(new.reshape(len(rows), -1)).all(dim=1).tolist()
        good = [j for j, ok in enumerate(finite) if ok]
        fields = to_physical(new[good]) if good else {}
        for n, j in enumerate(good):
            i = rows[j]
            store.write(init_idx, k - 1, members[i], {name: arr[n] for name, arr in fields.items()})
            store.save_state(init_idx, members[i], k, _to_numpy(new[j]))
            store.mark_complete(init_idx, members[i], k)
            states[i] = new[j]
        for j, ok in enumerate(finite):
            if not ok:
                alive[rows[j]] = False
                failures.append((init_time, members[rows[j]], k))
    if failures:
        raise RolloutError(failures)
