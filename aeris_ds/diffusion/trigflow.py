"""TrigFlow (Lu & Song 2024) on the normalized tendency, as AERIS trains it.

x_t = cos t·x0 + sin t·σ_d·z, t = arctan(τ/σ_d) with τ log-uniform in [σ_min, σ_max] (or log-normal); the
network F sees x_t/σ_d and predicts the velocity v = cos t·z − sin t·x0/σ_d. The denoised estimate is
x̂0 = σ_d·(cos t·x_t/σ_d − sin t·F).
"""

from __future__ import annotations

import numpy as np


def sample_time(rng: np.random.Generator, sigma_min: float, sigma_max: float, sigma_d: float = 1.0,
                distribution: str = "log_uniform", p_mean: float = -1.2, p_std: float = 1.2) -> float:
    """t = arctan(τ/σ_d), τ in [σ_min, σ_max]: log-uniform, or log-normal (log τ ~ N(p_mean, p_std²)) redrawn
    until inside the range."""
    if distribution == "log_uniform":
        tau = np.exp(rng.uniform(np.log(sigma_min), np.log(sigma_max)))
    elif distribution == "log_normal":
        tau = 0.0
        while not sigma_min <= tau <= sigma_max:
            tau = np.exp(rng.normal(p_mean, p_std))
    else:
        raise ValueError(f"unknown noise distribution {distribution!r}")
    return float(np.arctan(tau / sigma_d))


def noisy_input(x0: np.ndarray, z: np.ndarray, t: float, sigma_d: float = 1.0) -> np.ndarray:
    """The network's input x_t/σ_d."""
    return (np.cos(t) * x0 + np.sin(t) * sigma_d * z) / sigma_d


def velocity_target(x0: np.ndarray, z: np.ndarray, t: float, sigma_d: float = 1.0) -> np.ndarray:
    return np.cos(t) * z - np.sin(t) * x0 / sigma_d


def denoised(x_t_scaled, velocity, t, sigma_d: float = 1.0):
    """x̂0 from the scaled input x_t/σ_d and the predicted velocity (numpy or torch, t broadcastable)."""
    cos, sin = (np.cos(t), np.sin(t)) if isinstance(t, float) else (t.cos(), t.sin())
    return sigma_d * (cos * x_t_scaled - sin * velocity)
