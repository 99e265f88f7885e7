"""Fair CRPS of an ensemble and its sum over an autoregressive rollout (Swift's fine-tuning loss).

Fair CRPS (Ferro 2014), unbiased for the CRPS of the ensemble's generating distribution:
    CRPS_fair = (1/M)·Σ_i |x_i − y| − 1/(2M(M−1))·Σ_{i,j} |x_i − x_j|.
The rollout advances M members K steps and sums the weighted fair CRPS of every step against the truth,
with gradients through the whole rollout; each step runs under activation checkpointing, so memory
holds one step's activations plus the K states. Noise is an input of the step (drawn before it), so the
recomputation in backward sees the same noise.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor
from torch.utils.checkpoint import checkpoint

Step = Callable[[Tensor, Tensor, int], Tensor]  # (states [M·B, …], noise [M·B, …], step k) → next states


def fair_crps(ensemble: Tensor, truth: Tensor, weight: Tensor | float = 1.0) -> Tensor:
    """Σ weight · fair CRPS; ensemble [M, …], truth and weight broadcastable to one member's shape."""
    m = ensemble.shape[0]
    if m < 2:
        raise ValueError(f"the fair CRPS needs at least 2 members, got {m}")
    skill = (ensemble - truth).abs().mean(dim=0)
    spread = (ensemble[:, None] - ensemble[None]).abs().sum(dim=(0, 1)) / (2 * m * (m - 1))
    return (weight * (skill - spread)).sum()


def rollout_crps(step: Step, state: Tensor, truths: Tensor, noise: Tensor, weight: Tensor | float = 1.0,
                 checkpoint_steps: bool = True) -> Tensor:
    """Σ_k fair CRPS of M members rolled out K steps from ``state`` [B, …].

    ``truths`` [K, B, …]; ``noise`` [K, M, B, …] (one draw per step and member).
    """
    k_steps, m = noise.shape[:2]
    if truths.shape[0] != k_steps:
        raise ValueError(f"{truths.shape[0]} truth steps for {k_steps} noise steps")
    x = state.expand(m, *state.shape).reshape(-1, *state.shape[1:])
    total = state.new_zeros(())
    for k in range(k_steps):
        z = noise[k].reshape(x.shape)
        x = checkpoint(step, x, z, k + 1, use_reentrant=False) if checkpoint_steps else step(x, z, k + 1)
        total = total + fair_crps(x.view(m, *state.shape), truths[k], weight)
    return total
