"""Consistency training in TrigFlow form (sCM, Lu & Song 2024) on the unchanged diffusion network.

The consistency function is f(x_t, t) = cos t·x_t − sin t·σ_d·F(x_t/σ_d, t), so f(x_0, 0) = x_0 by
construction. Continuous-time consistency training pushes F along the tangent of f on the exact
trajectory x_t = cos t·x0 + sin t·σ_d·z, whose velocity dx_t/dt = σ_d·v is the diffusion data's target:

    g = −cos²t·(σ_d·F⁻ − dx_t/dt) − r·cos t·sin t·(x_t + σ_d·dF⁻/dt),   g ← g / (rms(g) + c),
    L = ‖F_θ − (F⁻ + g)‖²   (F⁻ = stop-gradient F_θ; r warms up 0 → 1).

dF⁻/dt, the network's JVP along the trajectory, is taken as a backward difference over Δ: one more
forward without gradient at (x_{t−Δ}, t − Δ), where x_{t−Δ} = cos Δ·x_t − sin Δ·σ_d·v is exact. So the
network, its routed all-to-alls and every SWiPe layout run as in diffusion training (no forward-mode AD),
and the loss stays the train loop's weighted MSE against a target. The rms in the tangent normalisation
is over a whole sample, summed over the WP × SP ranks that share it.

The consistency sampler (σ_d = 1, as the forecast's): one step f(z, t_max); two steps re-noise the first
estimate to t_mid and apply f once more.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from aeris_ds.diffusion.sampler import Generators, _randn_like

Network = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class ConsistencySettings:
    sigma_d: float = 1.0
    dt: float = 0.01  # Δ of the finite-difference tangent, in TrigFlow time (radians)
    norm_c: float = 0.1  # c of the tangent normalisation
    warmup_steps: int = 0  # r = min(1, step / warmup_steps)


def consistency_labels(net: Network, x: Tensor, t: Tensor, labels: tuple[Tensor, Tensor], step: int,
                       cfg: ConsistencySettings, group: dist.ProcessGroup | None = None
                       ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """(F_θ(x, t), (F⁻ + g, weight)) from a diffusion batch: x = [x_t/σ_d, conditioning…] per token,
    labels = (velocity v, loss weight), both [B, T, C]. Runs the network twice (once without gradient)."""
    v, weight = labels
    c = v.shape[-1]
    tb = t.float().view(-1, 1, 1)
    y = x[..., :c].float()
    with torch.no_grad():
        y_prev = math.cos(cfg.dt) * y - math.sin(cfg.dt) * v.float()
        f_prev = net(torch.cat([y_prev.to(x.dtype), x[..., c:]], dim=-1), t - cfg.dt).float()
    pred = net(x, t)
    f_now = pred.detach().float()
    dfdt = (f_now - f_prev) / cfg.dt
    r = 1.0 if cfg.warmup_steps <= 0 else min(1.0, step / cfg.warmup_steps)
    sd = cfg.sigma_d
    g = -tb.cos() ** 2 * (sd * f_now - sd * v.float()) - r * tb.cos() * tb.sin() * (sd * y + sd * dfdt)
    g = g / (sample_rms(g, group) + cfg.norm_c)
    return pred, (f_now + g, weight)


def sample_rms(g: Tensor, group: dist.ProcessGroup | None) -> Tensor:
    """Root mean square of each sample [B, 1, 1], over its tokens on every rank of ``group``."""
    stats = torch.stack([(g**2).sum(dim=(1, 2)), torch.full_like(g[:, 0, 0], g[0].numel())], dim=1)
    if group is not None and dist.get_world_size(group) > 1:
        dist.all_reduce(stats, group=group)
    return (stats[:, 0] / stats[:, 1]).sqrt().view(-1, 1, 1)


@dataclass(frozen=True)
class ConsistencySampler:
    """One or two consistency steps; t_max from the training σ range, t_mid as in sCM's two-step sampler."""

    steps: int = 1
    sigma_max: float = 500.0
    t_mid: float = 1.1

    def __post_init__(self) -> None:
        if self.steps not in (1, 2):
            raise ValueError(f"the consistency sampler takes 1 or 2 steps, got {self.steps}")

    @property
    def model_evaluations(self) -> int:
        return self.steps


def consistency_sample(velocity: Network, noise: Tensor, cfg: ConsistencySampler,
                       generator: Generators = None) -> Tensor:
    """x̂0 = f(x_t, t) from x_{t_max} = sin t_max·noise, then (two steps) from x_{t_mid} = cos·x̂0 + sin·fresh noise."""
    times = [math.atan(cfg.sigma_max), cfg.t_mid][: cfg.steps]
    x0 = noise
    for i, t in enumerate(times):
        x_t = math.sin(t) * noise if i == 0 else math.cos(t) * x0 + math.sin(t) * _randn_like(x0, generator)
        v = velocity(x_t, torch.full((noise.shape[0],), t, device=noise.device, dtype=noise.dtype))
        x0 = math.cos(t) * x_t - math.sin(t) * v
    return x0
