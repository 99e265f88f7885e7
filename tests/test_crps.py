"""The fair-CRPS rollout loss: a hand-computed toy, scoringrules' fair estimator, checkpointed gradients."""

from __future__ import annotations

import numpy as np
import pytest
import scoringrules
import torch

from aeris_ds.diffusion.crps import fair_crps, rollout_crps


def test_two_member_two_step_rollout_equals_the_hand_computed_fair_crps():
    """Members 0 + a·(0.5, 1.5) then + a·(1, −1) against truths 2, 2 at a = 1:
    step 1: skill (1.5 + 0.5)/2 = 1, spread 2·1/(2·2·1) = 0.5 → 0.5; step 2: members (1.5, 0.5), the same 0.5.
    d/da: each step −(0.5 + 1.5)/2 (skill) − 0.5 (spread 0.5·a grows with a) = −1.5, total −3."""
    a = torch.tensor(1.0, requires_grad=True)
    noise = torch.tensor([[0.5, 1.5], [1.0, -1.0]]).view(2, 2, 1)  # [K, M, B]

    def step(x, z, k):
        return x + a * z

    loss = rollout_crps(step, torch.zeros(1), torch.full((2, 1), 2.0), noise)
    loss.backward()
    assert loss.item() == pytest.approx(1.0)
    assert a.grad.item() == pytest.approx(-3.0)


def test_fair_crps_equals_scoringrules_fair_estimator():
    rng = np.random.default_rng(0)
    ens, obs, w = rng.normal(size=(4, 3, 5)), rng.normal(size=(3, 5)), rng.uniform(size=(3, 5))
    want = (w * scoringrules.crps_ensemble(obs, np.moveaxis(ens, 0, -1), estimator="fair")).sum()
    got = fair_crps(torch.from_numpy(ens), torch.from_numpy(obs), torch.from_numpy(w))
    assert got.item() == pytest.approx(want, rel=1e-12)


def test_checkpointed_rollout_has_the_plain_gradient():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()

    def step(x, z, k):
        return x + 0.1 * net(torch.cat([x, z], dim=-1))

    state, truths, noise = torch.randn(2, 3).double(), torch.randn(3, 2, 3).double(), torch.randn(3, 4, 2, 3).double()
    grads = []
    for ckpt in (True, False):
        net.zero_grad()
        rollout_crps(step, state, truths, noise, checkpoint_steps=ckpt).backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert any(g.abs().sum() > 0 for g in grads[0])
