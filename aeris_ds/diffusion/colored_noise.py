"""Diffusion noise coloured like the data's tendencies, per spherical-harmonic degree (diffusion.noise_spectrum).

White noise has equal power in every degree; a weather tendency has little at the small scales (the embedded
data's almost none above degree ~18, where its core's hyperdiffusion acts). At every noise level the small scales
of white noise lie far above their signal and the denoiser must remove nearly all of it. Noise coloured with the
tendency's power per degree raised to γ (γ = 1: every scale at one signal-to-noise ratio, γ = 0: white) keeps the
forward process Gaussian and linear, so TrigFlow, its velocity target and the sampler are unchanged: every draw of
noise (the training examples', the sampler's start and its churn) passes through the same map, which keeps each
channel's variance per grid point at 1, as white noise has it. It needs a Gaussian grid (aeris_ds/spectral.py).

Measured on the embedded data (results/quality/levers.md, tenth stop): γ = 1 lowers z500/t850 RMSE 1–2 % at
3–10 days and the small-scale power at 1 day, but not the excess that builds up over a rollout; off by default.
"""

from __future__ import annotations

import numpy as np
import torch

from aeris_ds.spectral import DegreeGains, degree_power

SPECTRUM_FLOOR = 1e-6  # of a channel's largest power per mode: a degree the data leaves empty still gets noise


def noise_gains(tendencies: np.ndarray, latitude: np.ndarray, truncation: int, exponent: float,
                where: str = "the grid") -> np.ndarray:
    """[C, N + 1] gains per channel and degree from normalised tendencies ``[K, C, lat, lon]``: (power per mode)^(γ/2),
    the largest 1 (NoiseColoring scales them to unit variance per grid point)."""
    power = degree_power(torch.from_numpy(np.asarray(tendencies, np.float64)), latitude, truncation, where)
    per_mode = power.mean(0).numpy() / (2 * np.arange(truncation + 1) + 1)
    per_mode = np.maximum(per_mode, SPECTRUM_FLOOR * per_mode.max(axis=1, keepdims=True))
    return (per_mode / per_mode.max(axis=1, keepdims=True)) ** (exponent / 2)


class NoiseColoring:
    """Colours white noise ``[..., C, lat, lon]`` with ``gains`` [C, N + 1] (noise_gains), at exactly unit variance
    per grid point on this grid."""

    def __init__(self, latitude: np.ndarray, n_lon: int, gains: np.ndarray | list, where: str = "the grid") -> None:
        gains = np.asarray(gains, np.float64)
        op = DegreeGains(latitude, n_lon, gains, where)
        self.op = DegreeGains(latitude, n_lon, gains / np.sqrt(op.pixel_variance().numpy())[:, None], where)

    def __call__(self, noise: torch.Tensor) -> torch.Tensor:
        return self.op(noise)
