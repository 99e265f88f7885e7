"""TrigFlow probability-flow sampler: DPM-Solver++(2S) on a Karras σ schedule, optional churn.

TrigFlow (σ_d = 1): x_t = cos t·x0 + sin t·z, σ = tan t, and the network predicts
v = cos t·z − sin t·x0, so the denoised estimate is x̂0 = cos t·x_t − sin t·v.
The solver works on the VE-scaled state y = x_t / cos t = x0 + σ·z, where the probability-flow
ODE in log-SNR λ = −log σ has the exact exponential-integrator step (data prediction, DPM-Solver++)

    y_next = (σ_next/σ)·y + (1 − σ_next/σ)·D,

with D the data prediction; 2S evaluates D a second time at the λ-midpoint σ_mid = √(σ·σ_next)
and uses that (r = 1/2), which makes each step second order. The last step goes from σ_min to
σ = 0 and returns the denoised estimate (one evaluation). ``steps`` noise levels therefore cost
2·steps − 1 network evaluations (AERIS: 10 steps = 19 evaluations).

Churn (Karras et al. 2022, as in GenCast) re-noises y from σ to σ̂ = σ(1 + γ) before a step when
S_tmin ≤ σ ≤ S_tmax, γ = min(S_churn/steps, √2 − 1); churn = 0 makes the sampler a deterministic
function of the initial noise.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from aeris_ds.config import SamplerConfig

Velocity = Callable[[Tensor, Tensor], Tensor]
Generators = torch.Generator | Sequence[torch.Generator] | None

__all__ = ["SamplerConfig", "karras_sigmas", "sample"]


def karras_sigmas(cfg: SamplerConfig, dtype: torch.dtype = torch.float64) -> Tensor:
    """σ_max … σ_min spaced uniformly in σ^(1/ρ) (``cfg.steps`` levels), then a final 0.

    ρ = 7 puts most levels at small σ, where the ODE's curvature (in λ) is largest.
    """
    if cfg.steps == 1:
        levels = torch.tensor([cfg.sigma_max], dtype=torch.float64)
    else:
        ramp = torch.linspace(0.0, 1.0, cfg.steps, dtype=torch.float64)
        lo, hi = cfg.sigma_min ** (1.0 / cfg.rho), cfg.sigma_max ** (1.0 / cfg.rho)
        levels = (hi + ramp * (lo - hi)) ** cfg.rho
    return torch.cat([levels, levels.new_zeros(1)]).to(dtype)


def _randn_like(x: Tensor, generator: Generators) -> Tensor:
    """Normal noise of x's shape; with a sequence of generators, row b of the batch uses generator b.

    Per-row generators keep a member's noise independent of which other members share its batch.
    """
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if len(generator) != x.shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {x.shape[0]}")
    return torch.stack(
        [torch.randn(x.shape[1:], generator=g, device=x.device, dtype=x.dtype) for g in generator]
    )


def _denoise(velocity: Velocity, y: Tensor, sigma: float) -> Tensor:
    """x̂0 from the VE state y at noise level σ via the network's v-prediction."""
    t = math.atan(sigma)
    x_t = y * math.cos(t)
    v = velocity(x_t, torch.full((y.shape[0],), t, device=y.device, dtype=y.dtype))
    return math.cos(t) * x_t - math.sin(t) * v


def sample(
    velocity: Velocity,
    noise: Tensor,
    cfg: SamplerConfig,
    generator: Generators = None,
    sigmas: Tensor | None = None,
    color: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Solve the probability-flow ODE from x_t = sin t_max·noise down to t = 0; returns x̂0.

    ``velocity(x_t, t)`` is the v-predictor with conditioning closed over; ``t`` has shape [B].
    ``generator`` (one, or one per batch row) drives churn only. ``sigmas`` overrides the Karras
    schedule (decreasing, ending with 0). ``color`` maps white noise to the training noise's colour (as
    ``noise`` already has it; diffusion/colored_noise.py) for churn's fresh noise.
    """
    sig = (karras_sigmas(cfg) if sigmas is None else sigmas.double().cpu()).tolist()
    if sig[-1] != 0.0 or any(b >= a for a, b in itertools.pairwise(sig)):
        raise ValueError(f"sigmas must decrease strictly and end with 0, got {sig}")
    n = len(sig) - 1
    gamma_max = min(cfg.churn / n, math.sqrt(2.0) - 1.0)
    y = noise * sig[0]
    for i in range(n):
        s, s_next = sig[i], sig[i + 1]
        if gamma_max > 0.0 and cfg.s_tmin <= s <= cfg.s_tmax:
            s_hat = s * (1.0 + gamma_max)
            fresh = _randn_like(y, generator)
            y = y + math.sqrt(s_hat**2 - s**2) * cfg.s_noise * (fresh if color is None else color(fresh))
            s = s_hat
        d = _denoise(velocity, y, s)
        if s_next == 0.0:
            y = d
            continue
        s_mid = math.sqrt(s * s_next)
        y_mid = (s_mid / s) * y + (1.0 - s_mid / s) * d
        d_mid = _denoise(velocity, y_mid, s_mid)
        y = (s_next / s) * y + (1.0 - s_next / s) * d_mid
    return y
