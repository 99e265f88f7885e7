"""The fair-CRPS rollout loss: a hand-computed toy, scoringrules' fair estimator, checkpointed gradients."""

from __future__ import annotations

import numpy as np
import pytest
import scoringrules
import torch
from ranks import run_ranks
from test_swipe_layouts import _assert_same, _ds_config

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


def _finetune_config(data: dict | None = None, **diffusion):
    from aeris_ds.config import load_config

    return load_config("tiny", {"data": data or {}, "diffusion": {"objective": "crps_finetune",
                                                                  "init_weights": "consistency.pt", "crps_steps": 2,
                                                                  "crps_members": 2, **diffusion}})


def test_finetune_objective_equals_the_hand_computed_fair_crps():
    """A network whose one-step tendency is z + state, tendency scale 2: a step maps s → s + 2(z + s) = 3s + 2z.
    From s = 1: step 1, noise (1, −1) → members (5, 1), truth 6: skill (1 + 5)/2 = 3, spread |5 − 1|/2 = 2 → 1;
    step 2, noise (0.5, 1) → (16, 5), truth 20: skill (4 + 15)/2 = 9.5, spread 11/2 = 5.5 → 4.
    In units of the tendency's std (÷ 2): 0.5 + 2 = 2.5."""
    from aeris_ds.diffusion.objective import training_objective

    def net(inp: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # F with cos t·x_t − sin t·F = z + state
        t = t.view(-1, 1, 1)
        x_t, state = inp[..., :1], inp[..., 1:2]
        return ((t.cos() - 1 / t.sin()) * x_t - state) / t.sin()

    objective = training_objective(_finetune_config(), None, torch.tensor([2.0], dtype=torch.float64))
    state = torch.ones(1, 1, 1, dtype=torch.float64)  # [B, T, C]
    forcings = torch.zeros(1, 2, 1, 3, dtype=torch.float64)  # [B, K, T, F]
    noise = torch.tensor([[1.0, -1.0], [0.5, 1.0]], dtype=torch.float64).view(1, 2, 2, 1, 1)  # [B, K, M, T, C]
    truths = torch.tensor([6.0, 20.0], dtype=torch.float64).view(1, 2, 1, 1)  # [B, K, T, C]
    loss = objective(net, (state, forcings, noise), (truths, torch.ones(1, 1, 1, dtype=torch.float64)), 0)
    assert loss.item() == pytest.approx(2.5, rel=1e-9)


def test_rollout_examples_hold_k_consecutive_states(tiny_store):
    """A crps_finetune sample: the initial state and the K states after it, one lead apart, as read from the
    store; its noise differs per member and step."""
    from aeris_ds.data.source import WeatherSource
    from aeris_ds.data.stats import load_stats
    from aeris_ds.examples import TrainingExamples
    from aeris_ds.parallel.layout import WindowGrid

    cfg = _finetune_config({"lead_hours": 12}, crps_steps=3)  # 2 store steps per lead: lead ≠ store step
    source = WeatherSource(tiny_store, cfg.data, "train", steps=3)
    assert source.lead_steps == 2
    assert source.n_samples == WeatherSource(tiny_store, cfg.data, "train").n_samples - 2 * source.lead_steps
    grid = WindowGrid(cfg.grid.lat, cfg.grid.lon, cfg.model.window, 1, 1)
    stats = load_stats(tiny_store, cfg.data.channel_names, 6)  # the store's stats; only mean and std are used
    ex = TrainingExamples(source, stats, cfg, grid, 0, 0, seed=0)  # the one rank of WP = SP = 1
    sample = source.n_samples - 1  # the last one: its third target is the split's last time
    assert source.time_index(sample) + 3 * source.lead_steps == source.split_slice.stop - 1
    state, forcings, noise, truths = ex.rollout(sample, 0, members=2)
    assert forcings.shape[:2] == (3, state.shape[0]) and noise.shape == (3, 2, *state.shape)
    c, ds = cfg.data.channel_names.index("temperature_500"), source.ds
    for k, got in enumerate([state, *truths]):
        raw = ds["temperature"].isel(time=source.time_index(sample) + k * source.lead_steps).sel(level=500).values
        np.testing.assert_allclose(got[:, c] * stats.std[c] + stats.mean[c], ex.tokens(raw[None])[:, 0], rtol=1e-5)
    assert not np.allclose(noise[0, 0], noise[0, 1]) and not np.allclose(noise[0, 0], noise[1, 0])


def _finetune_runs(store: str, out: str, runs: list[tuple[str, dict]], init: str | None) -> dict:
    """A one-step consistency model first (when ``init`` is None), then CRPS fine-tuning from it per layout."""
    from aeris_ds.config import load_config
    from aeris_ds.train import run

    if init is None:
        cfg = load_config("tiny", {"data": {"store": store}, "train": {"out_dir": f"{out}/consistency", "steps": 1},
                                   "diffusion": {"objective": "consistency"}})
        init = run(cfg, _ds_config(1))["weights"]
    results = {"init": init}
    for name, layout in runs:
        cfg = load_config("tiny", {"data": {"store": store}, "layout": layout, "train": {"out_dir": f"{out}/{name}"},
                                   "diffusion": {"objective": "crps_finetune", "init_weights": init, "crps_steps": 2,
                                                 "crps_members": 2}})
        summary = run(cfg, _ds_config(layout.get("dp", 1)))
        results[name] = [(r["loss"], r["grad_norm"]) for r in summary["history"]]
    return results


def test_crps_finetune_on_wp2_and_dp2_equals_one_process(tiny_store, tmp_path):
    """Loss, gradient norm and parameters of three clipped steps of 2-step, 2-member CRPS fine-tuning."""
    (ref,) = run_ranks(1, _finetune_runs, str(tiny_store), str(tmp_path / "ref"), [("single", {})], None,
                       tmp=tmp_path / "ranks1")
    saved = torch.load(tmp_path / "ref" / "single" / "weights.pt", weights_only=False)
    assert saved["meta"]["objective"] == "crps_finetune"
    start = torch.load(ref["init"], weights_only=False)["ema"]
    assert any(not torch.equal(saved["params"][k], start[k]) for k in start), "fine-tuning moved nothing"
    runs = [("wp2", {"wp": 2}), ("dp2", {"dp": 2})]
    res = run_ranks(2, _finetune_runs, str(tiny_store), str(tmp_path), runs, ref["init"], tmp=tmp_path / "ranks2")
    for name, _ in runs:
        _assert_same(res[0], tmp_path, name, ref, tmp_path / "ref")


def test_wrong_finetune_settings_are_one_line_errors(tiny_store, tmp_path):
    from aeris_ds.config import load_config
    from aeris_ds.errors import ConfigError, LayoutError
    from aeris_ds.train import check_engine
    from aeris_ds.weights import load_initial, save_weights

    with pytest.raises(ConfigError, match="crps_members: Input should be greater than or equal to 2"):
        _finetune_config(crps_members=1)
    with pytest.raises(ConfigError, match="crps_finetune fine-tunes a consistency model: set diffusion.init_weights"):
        load_config("tiny", {"diffusion": {"objective": "crps_finetune"}})
    with pytest.raises(LayoutError, match="pipeline engine"):
        check_engine(load_config("tiny", {"layout": {"pp": 2}, "diffusion": {"objective": "crps_finetune",
                                                                             "init_weights": "w.pt"}}),
                     _ds_config(1), pipeline=True)
    path = save_weights({"params": {}, "ema": {}}, tmp_path / "w.pt", {"objective": "diffusion"})
    with pytest.raises(ConfigError, match="holds a diffusion model; crps_finetune fine-tunes a one-step model") as err:
        load_initial(torch.nn.Linear(1, 1), path, "crps_finetune")
    assert "\n" not in str(err.value)
