"""The weight averages: the power-function profile equals its closed form (EDM2), and the constant decay its
recursion; neither depends on how a run is cut into steps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aeris_ds.ema import EMA, power_gamma


@pytest.mark.parametrize(("sigma_rel", "gamma"), [(0.05, 16.97), (0.10, 6.94)])
def test_power_gamma_matches_edm2(sigma_rel: float, gamma: float):
    """Karras et al. (2024) give γ = 16.97 for σ_rel = 0.05 and γ = 6.94 for σ_rel = 0.10."""
    assert power_gamma(sigma_rel) == pytest.approx(gamma, abs=0.005)


def _trajectory(steps: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(5, generator=g, dtype=torch.float64) + 0.01 * t for t in range(steps + 1)]


@pytest.mark.parametrize("length", [0.05, 0.10])
def test_power_average_is_the_weighted_mean_of_the_weights(length: float):
    """After T updates the power EMA is Σ w_t θ_t over the weights after each step t = 1..T with
    w_t = (t^(γ+1) − (t−1)^(γ+1)) / T^(γ+1) ≈ (γ+1) t^γ / T^(γ+1) (EDM2's profile): no trace of the initial weights
    θ_0, whatever T."""
    thetas = _trajectory(300)
    layer = nn.Linear(5, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(thetas[0].float())
    ema = EMA(layer, decay=0.999, length=length)
    gamma = power_gamma(length)
    for t in range(1, 301):
        with torch.no_grad():
            layer.weight.copy_(thetas[t].float())
        ema.update(t)
        if t in (1, 7, 60, 300):
            w = torch.tensor([(s**(gamma + 1) - (s - 1) ** (gamma + 1)) / t ** (gamma + 1) for s in range(1, t + 1)],
                             dtype=torch.float64)
            expected = (w[:, None] * torch.stack(thetas[1:t + 1])).sum(0)
            torch.testing.assert_close(ema.shadow[0][0].double(), expected, rtol=2e-6, atol=2e-6)


def test_constant_decay_keeps_its_recursion():
    thetas = _trajectory(20)
    layer = nn.Linear(5, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(thetas[0].float())
    ema = EMA(layer, decay=0.9)
    expected = thetas[0].clone()
    for t in range(1, 21):
        with torch.no_grad():
            layer.weight.copy_(thetas[t].float())
        ema.update(t)
        expected = 0.9 * expected + 0.1 * thetas[t]
    torch.testing.assert_close(ema.shadow[0][0].double(), expected, rtol=1e-5, atol=1e-5)
