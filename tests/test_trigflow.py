"""TrigFlow identities of the training objective (aeris_ds/diffusion/trigflow.py), checked against the
formulas of the paper written out here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aeris_ds.diffusion.trigflow import denoised, noisy_input, sample_time, velocity_target

RNG = np.random.default_rng(0)
X0 = RNG.standard_normal((3, 5, 7))
Z = RNG.standard_normal((3, 5, 7))


@pytest.mark.parametrize("sigma_d", [1.0, 0.5])
def test_trigflow_endpoints(sigma_d):
    """t = 0 is the clean target, t = π/2 pure noise; the velocity at t = 0 is z, at π/2 it is −x0/σ_d."""
    np.testing.assert_allclose(noisy_input(X0, Z, 0.0, sigma_d), X0 / sigma_d)
    np.testing.assert_allclose(noisy_input(X0, Z, np.pi / 2, sigma_d), Z, atol=1e-12)
    np.testing.assert_allclose(velocity_target(X0, Z, 0.0, sigma_d), Z)
    np.testing.assert_allclose(velocity_target(X0, Z, np.pi / 2, sigma_d), -X0 / sigma_d, atol=1e-12)


@pytest.mark.parametrize("t", [0.1, 0.7, 1.3])
@pytest.mark.parametrize("sigma_d", [1.0, 0.5])
def test_trigflow_velocity_is_time_derivative(t, sigma_d):
    """v = cos t·z − sin t·x0/σ_d is d(x_t/σ_d)/dt (x_t = cos t·x0 + sin t·σ_d·z), by central differences."""
    want = np.cos(t) * Z - np.sin(t) * X0 / sigma_d
    np.testing.assert_allclose(velocity_target(X0, Z, t, sigma_d), want, rtol=1e-12)
    h = 1e-6
    numeric = (noisy_input(X0, Z, t + h, sigma_d) - noisy_input(X0, Z, t - h, sigma_d)) / (2 * h)
    np.testing.assert_allclose(velocity_target(X0, Z, t, sigma_d), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("sigma_d", [1.0, 0.5])
def test_trigflow_denoised_inverts_noising(sigma_d):
    """The true velocity turns x_t back into x0 at any t, in numpy and in torch."""
    for t in (0.05, 0.8, 1.5):
        x_t, v = noisy_input(X0, Z, t, sigma_d), velocity_target(X0, Z, t, sigma_d)
        np.testing.assert_allclose(denoised(x_t, v, t, sigma_d), X0, rtol=1e-10, atol=1e-12)
    t = torch.tensor([0.05, 0.8, 1.5], dtype=torch.float64)[:, None, None]
    x_t = torch.cos(t) * torch.from_numpy(X0) / sigma_d + torch.sin(t) * torch.from_numpy(Z)
    v = torch.cos(t) * torch.from_numpy(Z) - torch.sin(t) * torch.from_numpy(X0) / sigma_d
    torch.testing.assert_close(denoised(x_t, v, t, sigma_d), torch.from_numpy(X0).expand(3, -1, -1))


def test_trigflow_sample_time_is_log_uniform_in_sigma():
    """t = arctan(τ/σ_d), τ log-uniform in [0.2, 500]: log τ uniform between its bounds."""
    rng = np.random.default_rng(1)
    t = np.array([sample_time(rng, 0.2, 500.0) for _ in range(20000)])
    tau = np.tan(t)
    assert tau.min() >= 0.2 - 1e-9 and tau.max() <= 500 + 1e-6
    u = (np.log(tau) - np.log(0.2)) / (np.log(500) - np.log(0.2))
    hist, _ = np.histogram(u, bins=10, range=(0, 1))
    np.testing.assert_allclose(hist / len(u), 0.1, atol=0.01)
    # The same τ at σ_d = 2 gives arctan(τ/2).
    assert sample_time(np.random.default_rng(1), 0.2, 500.0, sigma_d=2.0) == pytest.approx(np.arctan(tau[0] / 2))


def test_trigflow_sample_time_log_normal_is_truncated_normal_in_log_sigma():
    """log τ ~ N(p_mean, p_std²) redrawn outside [σ_min, σ_max]: mean and std of the truncated normal."""
    rng = np.random.default_rng(2)
    lo, hi, mu, sd = 0.1, 50.0, -1.2, 1.2
    log_tau = np.log(np.tan([sample_time(rng, lo, hi, 1.0, "log_normal", mu, sd) for _ in range(20000)]))
    assert log_tau.min() >= np.log(lo) - 1e-9 and log_tau.max() <= np.log(hi) + 1e-9
    a, b = (np.log(lo) - mu) / sd, (np.log(hi) - mu) / sd
    pdf = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    z = cdf(b) - cdf(a)
    mean = mu + sd * (pdf(a) - pdf(b)) / z
    std = sd * math.sqrt(1 + (a * pdf(a) - b * pdf(b)) / z - ((pdf(a) - pdf(b)) / z) ** 2)
    assert abs(log_tau.mean() - mean) < 4 * std / np.sqrt(log_tau.size)
    assert abs(log_tau.std() / std - 1) < 0.03
    assert abs(log_tau.std() / sd - 1) > 0.05  # the truncation is visible: not a plain normal
    with pytest.raises(ValueError, match="noise distribution"):
        sample_time(rng, lo, hi, 1.0, "uniform")
