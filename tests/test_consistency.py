"""Consistency training (sCM in TrigFlow form) and the one/two-step consistency sampler.

A 1-D Gaussian mixture checks the objective itself (a tiny MLP, not the DiT); the tiny DiT checks that
WP2 and SP2 train it exactly like one process, and that a one-step forecast streams what it computes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from ranks import run_ranks
from test_swipe_layouts import _assert_same, _ds_config

from aeris_ds.diffusion.consistency import (
    ConsistencySampler,
    ConsistencySettings,
    consistency_labels,
    consistency_sample,
)

WEIGHTS, MEANS, STDS = (0.3, 0.7), (-1.0, 1.0), (0.2, 0.3)  # the 1-D target mixture


class MLP(torch.nn.Module):
    """F(x_t, t) on tokens [B, T, 1], the same call signature as the DiT."""

    def __init__(self, hidden: int = 64):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, hidden),
                                       torch.nn.SiLU(), torch.nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = t.view(-1, 1, 1).expand(-1, x.shape[1], 1)
        return self.net(torch.cat([x, tt.sin(), tt.cos()], dim=-1))


def _mixture(n: int, g: torch.Generator) -> torch.Tensor:
    first = torch.rand(n, generator=g) < WEIGHTS[0]
    return torch.where(first, MEANS[0] + STDS[0] * torch.randn(n, generator=g),
                       MEANS[1] + STDS[1] * torch.randn(n, generator=g))


def _batch(g: torch.Generator, b: int = 8, tokens: int = 64, sigma_min: float = 0.002):
    """A diffusion batch as the data pipeline makes it: (x_t, t), (velocity, weight)."""
    x0 = _mixture(b * tokens, g).view(b, tokens, 1)
    z = torch.randn(b, tokens, 1, generator=g)
    t = torch.atan(torch.empty(b).uniform_(math.log(sigma_min), math.log(500.0), generator=g).exp())
    tb = t.view(-1, 1, 1)
    return tb.cos() * x0 + tb.sin() * z, t, tb.cos() * z - tb.sin() * x0, torch.full_like(z, 1 / (b * tokens))


def test_one_step_samples_match_the_mixture_mean_and_variance():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    net = MLP()
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 1500)  # the end of training averages the noise
    for step in range(1500):
        x, t, v, w = _batch(g)
        pred, (target, w) = consistency_labels(net, x, t, (v, w), step, ConsistencySettings())
        loss = (w * (pred - target) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay.step()
    mean = sum(p * m for p, m in zip(WEIGHTS, MEANS))
    var = sum(p * (s**2 + m**2) for p, m, s in zip(WEIGHTS, MEANS, STDS)) - mean**2
    for steps in (1, 2):
        with torch.no_grad():
            x = consistency_sample(net, torch.randn(20000, 1, 1, generator=g), ConsistencySampler(steps), g)
        assert abs(x.mean().item() - mean) < 0.05, f"{steps}-step mean {x.mean().item():.3f}, target {mean:.3f}"
        assert abs(x.var().item() / var - 1) < 0.08, f"{steps}-step variance {x.var().item():.3f}, target {var:.3f}"


def test_finite_difference_tangent_matches_the_jvp():
    """The target's dF/dt along the trajectory equals torch.func.jvp's (to the difference's O(Δt))."""
    torch.manual_seed(1)
    g = torch.Generator().manual_seed(1)
    net, (x, t, v, w) = MLP(), _batch(g, b=4, tokens=16, sigma_min=0.2)
    cfg = ConsistencySettings(dt=1e-3, norm_c=1e-12)  # the target is F + g/rms(g)
    _, (target, _) = consistency_labels(net, x, t, (v, w), 0, cfg)
    f, dfdt = torch.func.jvp(net, (x, t), (v, torch.ones_like(t)))  # dx_t/dt = σ_d·v, dt/dt = 1
    tb = t.view(-1, 1, 1)
    g_jvp = (-tb.cos() ** 2 * (f - v) - tb.cos() * tb.sin() * (x + dfdt)).detach()
    g_jvp = g_jvp / g_jvp.pow(2).mean(dim=(1, 2), keepdim=True).sqrt()
    torch.testing.assert_close(target - f.detach(), g_jvp, rtol=1e-2, atol=1e-2)


def _consistency_runs(store: str, out: str, runs: list[tuple[str, dict]], init: str | None) -> dict:
    """Diffusion weights first (when ``init`` is None), then consistency training from them per layout."""
    from aeris_ds.config import load_config
    from aeris_ds.train import run

    if init is None:
        cfg = load_config("tiny", {"data": {"store": store}, "train": {"out_dir": f"{out}/diffusion", "steps": 2}})
        init = run(cfg, _ds_config(1))["weights"]
    results = {"init": init}
    for name, layout in runs:
        cfg = load_config("tiny", {"data": {"store": store}, "layout": layout, "train": {"out_dir": f"{out}/{name}"},
                                   "diffusion": {"objective": "consistency", "init_weights": init,
                                                 "sigma_min": 0.002, "consistency_warmup": 2}})
        summary = run(cfg, _ds_config(layout.get("dp", 1)))
        results[name] = [(r["loss"], r["grad_norm"]) for r in summary["history"]]
    return results


@pytest.fixture(scope="module")
def consistency_reference(tiny_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("consistency")
    (res,) = run_ranks(1, _consistency_runs, str(tiny_store), str(out), [("single", {})], None, tmp=out / "ranks")
    return res, out


def test_consistency_training_on_wp2_and_sp2_equals_one_process(consistency_reference, tiny_store, tmp_path):
    ref, ref_out = consistency_reference
    saved = torch.load(ref_out / "single" / "weights.pt", weights_only=False)
    assert saved["meta"]["objective"] == "consistency"
    start = torch.load(ref["init"], weights_only=False)["ema"]
    assert any(not torch.equal(saved["params"][k], start[k]) for k in start), "consistency training moved nothing"
    runs = [("wp2", {"wp": 2}), ("sp2", {"sp": 2})]
    res = run_ranks(2, _consistency_runs, str(tiny_store), str(tmp_path), runs, ref["init"], tmp=tmp_path / "ranks")
    for name, _ in runs:
        _assert_same(res[0], tmp_path, name, ref, ref_out)


def test_pipeline_layout_is_refused_for_consistency(tiny_store):
    from aeris_ds.config import load_config
    from aeris_ds.errors import LayoutError
    from aeris_ds.train import check_engine

    cfg = load_config("tiny", {"layout": {"pp": 2}, "diffusion": {"objective": "consistency"}})
    with pytest.raises(LayoutError, match="pipeline engine"):
        check_engine(cfg, _ds_config(1), pipeline=True)


def test_one_step_forecast_streams_what_it_computes(consistency_reference, tiny_store, tmp_path):
    from aeris_ds.forecast.driver import Forecaster, run_forecast
    from aeris_ds.forecast.rollout import member_generator

    ref, ref_out = consistency_reference
    weights, sampler = ref_out / "single" / "weights.pt", ConsistencySampler(steps=1)
    out = run_forecast(weights, tiny_store, tmp_path / "fc.zarr", "test:1", 2, "12h", sampler, seed=5,
                       progress=False)
    stored = xr.open_zarr(out)
    fc = Forecaster(weights, tiny_store, sampler)
    init = stored["time"].values[0]
    state = fc.initial_state(int(np.flatnonzero(fc.source.times == init)[0])).expand(2, -1, -1)
    for k in (1, 2):
        with torch.no_grad():
            gens = [member_generator(5, init, m, k) for m in range(2)]
            state = fc.step(state, gens, np.array([init + k * fc.lead] * 2))
        want = fc.to_physical(state)
        for name in ("temperature", "2m_temperature"):
            got = stored[name].isel(time=0, prediction_timedelta=k - 1).values
            np.testing.assert_allclose(got, want[name], rtol=1e-6, err_msg=f"{name} step {k}")
    assert np.abs(want["temperature"][0] - want["temperature"][1]).max() > 0, "members must differ"


def test_forecast_refuses_a_sampler_that_does_not_fit_the_weights(consistency_reference, tiny_store, tmp_path):
    from aeris_ds.config import SamplerConfig
    from aeris_ds.errors import ConfigError
    from aeris_ds.forecast.driver import Forecaster

    ref, ref_out = consistency_reference
    with pytest.raises(ConfigError, match="consistency model: use --consistency-steps"):
        Forecaster(ref_out / "single" / "weights.pt", tiny_store, SamplerConfig(steps=2))
    with pytest.raises(ConfigError, match="consistency model: use --consistency-steps"):
        Forecaster(ref_out / "single" / "weights.pt", tiny_store)  # the saved diffusion sampler
    with pytest.raises(ConfigError, match="diffusion model: drop --consistency-steps"):
        Forecaster(Path(ref["init"]), tiny_store, ConsistencySampler(steps=1))
