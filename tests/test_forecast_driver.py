"""The forecast CLI end to end: a trained tiny model, ensemble rollouts on 1 and 2 ranks, then scores."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from ranks import run_ranks

from aeris_ds.data.schema import open_store


def _train(store: str, out: str) -> str:
    from aeris_ds.config import load_config, load_ds_config
    from aeris_ds.train import run

    cfg = load_config("tiny", {"data": {"store": store}, "train": {"out_dir": out, "steps": 4}})
    return run(cfg, load_ds_config(cfg.train.ds_config))["weights"]


def _forecast(weights: str, store: str, out: str, members: int, batch: int = 64) -> str:
    import torch.distributed as dist

    from aeris_ds.diffusion.sampler import SamplerConfig
    from aeris_ds.forecast.driver import run_forecast

    dist.init_process_group("gloo")
    return str(run_forecast(weights, store, out, "test:2", members, "18h", SamplerConfig(steps=3), seed=3,
                            progress=False, batch=batch))


@pytest.fixture(scope="module")
def weights(tiny_store, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("trained")
    (path,) = run_ranks(1, _train, str(tiny_store), str(out / "run"), tmp=out / "ranks")
    return path


def test_forecast_members_over_ranks_match_one_rank(weights, tiny_store, tmp_path):
    one = run_ranks(1, _forecast, weights, str(tiny_store), str(tmp_path / "one.zarr"), 3, tmp=tmp_path / "r1")[0]
    two = run_ranks(2, _forecast, weights, str(tiny_store), str(tmp_path / "two.zarr"), 3, tmp=tmp_path / "r2")[0]
    # 6 rows at most 4 at a time: two chunks of 3
    chunked = run_ranks(1, _forecast, weights, str(tiny_store), str(tmp_path / "chunked.zarr"), 3, 4,
                        tmp=tmp_path / "r3")[0]
    a, b = xr.open_zarr(one), xr.open_zarr(two)
    assert dict(a["geopotential"].sizes) == {"time": 2, "prediction_timedelta": 3, "number": 3, "level": 2,
                                             "latitude": 16, "longitude": 32}
    assert (a["completed_steps"].values == 3).all() and (b["completed_steps"].values == 3).all()
    for name in ("geopotential", "2m_temperature"):
        x, y = a[name].values, b[name].values
        assert np.isfinite(x).all()
        np.testing.assert_allclose(x, y, rtol=1e-5, err_msg=f"{name}: 2-rank forecast differs from 1 rank")
        np.testing.assert_allclose(xr.open_zarr(chunked)[name].values, x, rtol=1e-5, err_msg=f"{name}: chunks")
        assert x.std(axis=2).mean() > 0, "members must differ (independent noise)"
    truth = open_store(tiny_store)
    init = a["time"].values[0]
    assert init in truth["time"].values  # initial conditions come from the store's test split
    assert init >= np.datetime64(truth.attrs["split_test"].split("/")[0])


def test_forecast_evaluate_writes_scorecard(weights, tiny_store, tmp_path):
    from aeris_ds.cli import main

    fc = run_ranks(1, _forecast, weights, str(tiny_store), str(tmp_path / "fc.zarr"), 2, tmp=tmp_path / "r")[0]
    main(["evaluate", fc, "--truth", str(tiny_store), "--out", str(tmp_path / "scores"), "--variables",
          "geopotential", "--levels", "500"])
    card = (tmp_path / "scores" / "scorecard.txt").read_text()
    assert "geopotential" in card and "RMSE/pers" in card
    assert any(p.stat().st_size > 5000 for p in (tmp_path / "scores").glob("*.png"))


def test_forecast_refuses_a_lead_longer_than_the_split(weights, tiny_store, tmp_path):
    from aeris_ds.diffusion.sampler import SamplerConfig
    from aeris_ds.forecast.driver import run_forecast

    with pytest.raises(ValueError, match="shorter than the lead"):
        run_forecast(weights, tiny_store, tmp_path / "x.zarr", "test:1", 1, "90d", SamplerConfig(steps=2))
    with pytest.raises(ValueError, match="not a multiple"):
        run_forecast(weights, tiny_store, tmp_path / "x.zarr", "test:1", 1, "3h", SamplerConfig(steps=2))


def _tree(path) -> dict[str, bytes]:
    from pathlib import Path

    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(Path(path).rglob("*")) if p.is_file()}


def test_forecast_out_never_clobbers_inputs_or_other_data(weights, tiny_store, tmp_path):
    from pathlib import Path

    from aeris_ds.cli import main
    from aeris_ds.diffusion.sampler import SamplerConfig
    from aeris_ds.errors import OutputError
    from aeris_ds.forecast.driver import run_forecast

    run_dir, other = Path(weights).parent, tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    before = {p: _tree(p) for p in (run_dir, tiny_store, other)}
    for out, why in ((run_dir, "contains the input"), (tiny_store, "is the input"),
                     (tiny_store / "sub.zarr", "is inside the input"), (other, "not an output of aeris-ds")):
        with pytest.raises(OutputError, match=why):
            run_forecast(weights, tiny_store, out, "test:1", 1, "6h", SamplerConfig(steps=2), progress=False)
    with pytest.raises(SystemExit) as exit_info:  # the CLI: one line, non-zero exit
        main(["forecast", "--weights", weights, "--store", str(tiny_store), "--out", str(run_dir)])
    assert exit_info.value.code == 2
    assert {p: _tree(p) for p in before} == before, "a refused forecast must not touch anything"

    # A forecast store of its own is resumed (a second run finds every step done), or replaced on request.
    out = tmp_path / "fc.zarr"
    args = (weights, tiny_store, out, "test:1", 2, "12h", SamplerConfig(steps=2))
    run_forecast(*args, progress=False)
    first = xr.open_zarr(out)["geopotential"].values
    run_forecast(*args, progress=False)
    np.testing.assert_array_equal(xr.open_zarr(out)["geopotential"].values, first)
    with pytest.raises(OutputError, match="created for another forecast"):
        run_forecast(weights, tiny_store, out, "test:1", 3, "12h", SamplerConfig(steps=2), progress=False)
    run_forecast(weights, tiny_store, out, "test:1", 3, "12h", SamplerConfig(steps=2), progress=False,
                 overwrite=True)
    assert xr.open_zarr(out).sizes["number"] == 3
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no temporary left behind"


def test_forecast_batched_rows_equal_one_member_at_a_time_in_memory(weights, tiny_store, tmp_path):
    """Streamed forecast of 2 init times × 2 members in one batch (the network sees both init times at once)
    equals an in-memory rollout of each (init, member) alone with the same per-step generators."""
    import torch

    from aeris_ds.config import SamplerConfig
    from aeris_ds.forecast.driver import Forecaster, run_forecast
    from aeris_ds.forecast.rollout import member_generator

    sampler = SamplerConfig(steps=2, sigma_max=20.0, sigma_min=0.01)
    out = run_forecast(weights, tiny_store, tmp_path / "fc.zarr", "test:2", 2, "18h", sampler, seed=5,
                       progress=False)
    ds = xr.open_zarr(out)
    fc = Forecaster(weights, tiny_store, sampler)
    with torch.no_grad():  # as in the rollout
        for i, init in enumerate(ds["time"].values):
            for m in range(2):
                state = fc.initial_state(int(np.flatnonzero(fc.source.times == init)[0]))[None]
                for k in range(1, 4):
                    gen = member_generator(5, init, m, k)
                    state = fc.step(state, [gen], np.array([init + k * fc.lead]))
                    for name, field in fc.to_physical(state).items():
                        np.testing.assert_allclose(ds[name].values[i, k - 1, m], field[0], rtol=2e-5, atol=1e-4,
                                                   err_msg=f"{name} init {i} member {m} step {k}")
    assert not np.allclose(ds["geopotential"].values[0], ds["geopotential"].values[1])


def test_compiled_forecast_equals_eager(weights, tiny_store):
    """Forecasts with each Swin block through torch.compile (weights trained with train.compile) roll out the
    same members as eager, to fp32 rounding. Random weights (the briefly trained head is still near zero) make
    every block shape the output."""
    import torch

    from aeris_ds.config import SamplerConfig
    from aeris_ds.forecast.driver import Forecaster
    from aeris_ds.forecast.rollout import member_generator
    from aeris_ds.model.swin_dit import SwinBlock

    sampler = SamplerConfig(steps=2, sigma_max=20.0, sigma_min=0.01)
    eager, compiled = (Forecaster(weights, tiny_store, sampler, compile=flag) for flag in (False, True))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in eager.model.parameters():
            p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
    compiled.model.load_state_dict(eager.model.state_dict())
    blocks = [m for m in compiled.model.modules() if isinstance(m, SwinBlock)]
    assert blocks and all(b._compiled_call_impl is not None for b in blocks), "the blocks must be compiled"
    init = eager.source.split_slice.start
    t0 = eager.source.times[init]
    start = torch.stack([eager.initial_state(init)] * 2)
    a, b = start, start
    with torch.no_grad():  # as in the rollout
        for k in range(1, 4):
            valid = np.array([t0 + k * eager.lead] * 2)
            a = eager.step(a, [member_generator(1, t0, m, k) for m in range(2)], valid)
            b = compiled.step(b, [member_generator(1, t0, m, k) for m in range(2)], valid)
    assert (a - start).abs().max() > 0.1, "the steps must move the state"
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_perturbations_are_climate_differences_in_pairs(weights, tiny_store, tmp_path):
    """Random-field perturbations: members 2p and 2p + 1 start from x0 ± α·(x_a − x_b)/√2 and each later step's
    input gets ± β·(x_c − x_d)/√2, x_a … x_d training-split states (found here by brute force from the store
    itself); other pairs, steps and init times draw other states; the streamed forecast is the in-memory rollout
    with them, and resumes exactly."""
    import torch

    from aeris_ds.config import SamplerConfig
    from aeris_ds.forecast.driver import Forecaster, run_forecast
    from aeris_ds.forecast.rollout import member_generator

    alpha, beta = 0.3, 0.2
    sampler = SamplerConfig(steps=2, sigma_max=20.0, sigma_min=0.01, init_perturbation=alpha, step_perturbation=beta)
    fc = Forecaster(weights, tiny_store, sampler)
    truth = open_store(tiny_store)
    train = truth.sel(time=slice(*truth.attrs["split_train"].split("/")))
    # Every training state as the forecaster's tokens, built from the store here, not through the forecaster.
    states = torch.stack([fc.to_tokens(np.concatenate([
        truth[v].sel(time=t, level=fc.cfg.data.levels).values if "level" in truth[v].dims
        else truth[v].sel(time=t).values[None] for v in (*fc.cfg.data.atmospheric, *fc.cfg.data.surface)]))
        for t in train["time"].values])
    states = (states - fc.mean) / fc.std

    def pair_of(d: torch.Tensor) -> tuple[int, int]:
        gap = (states[:, None] - states[None, :] - d).abs().amax(dim=(2, 3))
        a, b = np.unravel_index(int(gap.argmin()), gap.shape)
        assert float(gap[a, b]) < 1e-4 and a != b, "a perturbation is a difference of two training states"
        return int(a), int(b)

    t0 = fc.source.times[fc.source.split_slice.start + 3]
    draws = set()
    for step, scale in ((0, alpha), (1, beta), (2, beta)):
        p = [fc.perturbation(t0, m, 7, step) for m in range(4)]
        torch.testing.assert_close(p[0] + p[1], torch.zeros_like(p[0]), rtol=0, atol=1e-6)
        draws |= {pair_of(p[m] * np.sqrt(2.0) / scale) for m in (0, 2)}
    assert len(draws) == 6, "each pair and each step draws its own states"
    assert not torch.equal(fc.perturbation(t0 + fc.lead, 0, 7, 0), fc.perturbation(t0, 0, 7, 0))
    plain = Forecaster(weights, tiny_store, SamplerConfig(steps=2, sigma_max=20.0, sigma_min=0.01))
    assert plain.perturb is None and fc.perturb is not None

    out = run_forecast(weights, tiny_store, tmp_path / "fc.zarr", "test:1", 4, "12h", sampler, seed=7,
                       progress=False)
    ds = xr.open_zarr(out)
    t0 = ds["time"].values[0]
    start = fc.initial_state(int(np.flatnonzero(fc.source.times == t0)[0]))
    with torch.no_grad():  # the streamed members are the in-memory rollouts with their perturbations
        for m in range(4):
            state = start[None]
            for k in (1, 2):  # step k evolves the perturbation k − 1 and writes the network's output
                state = state + fc.perturbation(t0, m, 7, k - 1)
                state = fc.step(state, [member_generator(7, t0, m, k)], np.array([t0 + k * fc.lead]))
                np.testing.assert_allclose(ds["geopotential"].values[0, k - 1, m],
                                           fc.to_physical(state)["geopotential"][0], rtol=2e-5, atol=1e-4,
                                           err_msg=f"member {m} step {k}")


def test_bf16_forecast_follows_fp32_and_defaults_to_how_the_weights_trained(weights, tiny_store, monkeypatch):
    """bf16 autocast rolls out the same members as fp32 to bf16 rounding (random weights, as above); by default
    it is on only for weights trained with train.bf16 true or auto on a device with native bf16."""
    import torch

    from aeris_ds.config import SamplerConfig
    from aeris_ds.forecast import driver
    from aeris_ds.forecast.rollout import member_generator

    sampler = SamplerConfig(steps=2, sigma_max=20.0, sigma_min=0.01)
    fp32, bf16 = (driver.Forecaster(weights, tiny_store, sampler, bf16=flag) for flag in (False, True))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in fp32.model.parameters():
            p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
    bf16.model.load_state_dict(fp32.model.state_dict())
    init = fp32.source.split_slice.start
    t0 = fp32.source.times[init]
    start = torch.stack([fp32.initial_state(init)] * 2)
    a, b = start, start
    with torch.no_grad():
        for k in range(1, 3):
            valid = np.array([t0 + k * fp32.lead] * 2)
            a = fp32.step(a, [member_generator(1, t0, m, k) for m in range(2)], valid)
            b = bf16.step(b, [member_generator(1, t0, m, k) for m in range(2)], valid)
    assert b.dtype == torch.float32 and not torch.equal(a, b), "bf16 must change the arithmetic, not the state"
    assert float((b - a).norm() / (a - start).norm()) < 0.03

    monkeypatch.setattr(driver, "native_bf16", lambda: True)
    assert not driver.Forecaster(weights, tiny_store, sampler).bf16  # the tiny preset trains in fp32
    saved = driver.load_weights(weights)
    trained_bf16 = {**saved["meta"]["config"], "train": {**saved["meta"]["config"]["train"], "bf16": "auto"}}
    monkeypatch.setattr(driver, "load_weights", lambda path: {**saved, "meta": {**saved["meta"],
                                                                               "config": trained_bf16}})
    assert driver.Forecaster(weights, tiny_store, sampler).bf16
    monkeypatch.setattr(driver, "native_bf16", lambda: False)
    assert not driver.Forecaster(weights, tiny_store, sampler).bf16
