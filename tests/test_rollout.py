"""Streamed, resumable rollouts into the WB2-layout ForecastStore, with a toy stochastic step."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from aeris_ds.forecast import ForecastStore, RolloutError, member_generator, rollout

INITS = np.array(["2020-01-01T00", "2020-01-03T12"], dtype="datetime64[ns]")
LEVELS = [500, 850]
VARIABLES = {"temperature": LEVELS, "2m_temperature": None}
SEED = 1234


def toy_step(state: torch.Tensor, gens: Sequence[torch.Generator], valid: np.ndarray) -> torch.Tensor:
    """Damped linear advection, a forcing of each row's valid hour, and per-member seeded noise (row b uses
    only gens[b])."""
    noise = torch.stack([torch.randn(state.shape[1:], generator=g) for g in gens])
    hour = torch.tensor([float((t - np.datetime64(t, "D")) / np.timedelta64(1, "h")) for t in valid])
    forcing = 0.05 * hour.reshape(-1, *[1] * (state.dim() - 1))
    return 0.9 * state + 0.1 * torch.roll(state, 1, dims=-1) + forcing + 0.3 * noise


def to_physical(state: torch.Tensor) -> dict[str, np.ndarray]:
    """De-normalize in numpy, so the fields are numpy allocations that tracemalloc sees."""
    x = state.numpy()
    return {"temperature": 250.0 + 10.0 * x[:, :2], "2m_temperature": 280.0 + 5.0 * x[:, 2]}


def make_store(path: Path, n_leads: int, members: int = 3, grid: tuple[int, int] = (4, 8)) -> ForecastStore:
    leads = np.arange(1, n_leads + 1) * np.timedelta64(6, "h")
    lat = np.linspace(-60.0, 60.0, grid[0])
    lon = np.arange(grid[1]) * 360.0 / grid[1]
    return ForecastStore.create(path, INITS, leads, members, VARIABLES, lat, lon, attrs={"model": "toy"})


def init_state(members: int, grid: tuple[int, int] = (4, 8)) -> torch.Tensor:
    base = torch.randn(3, *grid, generator=torch.Generator().manual_seed(7))
    return base.expand(members, -1, -1, -1).clone()


def reference(init_idx: int, member: int, n_steps: int) -> list[dict[str, np.ndarray]]:
    """In-memory rollout of one member, one step at a time."""
    state, out = init_state(1), []
    for k in range(1, n_steps + 1):
        valid = np.array([INITS[init_idx] + k * np.timedelta64(6, "h")])
        state = toy_step(state, [member_generator(SEED, INITS[init_idx], member, k)], valid)
        out.append({name: arr[0] for name, arr in to_physical(state).items()})
    return out


def rows(init_idx: int, *members: int) -> list[tuple[int, int]]:
    return [(init_idx, m) for m in members]


def read(path: Path) -> xr.Dataset:
    return xr.open_zarr(path).load()


def test_rollout_stream_equals_in_memory(tmp_path: Path) -> None:
    store = make_store(tmp_path / "f.zarr", n_leads=6)
    rollout(toy_step, init_state(3), 6, store, rows(1, 0, 1, 2), to_physical, SEED, progress=False)
    ds = read(tmp_path / "f.zarr")
    for m in range(3):
        for k, fields in enumerate(reference(1, m, 6)):
            for name, value in fields.items():
                np.testing.assert_array_equal(ds[name].isel(time=1, prediction_timedelta=k, number=m), value)
    assert ds["completed_steps"].values.tolist() == [[0, 0, 0], [6, 6, 6]]
    assert np.isnan(ds["temperature"].isel(time=0)).all()
    assert not np.array_equal(ds["2m_temperature"][1, :, 0], ds["2m_temperature"][1, :, 1])


def test_rollout_member_independent_of_batch(tmp_path: Path) -> None:
    together, alone = make_store(tmp_path / "a.zarr", 4), make_store(tmp_path / "b.zarr", 4)
    rollout(toy_step, init_state(3), 4, together, rows(0, 0, 1, 2), to_physical, SEED, progress=False)
    rollout(toy_step, init_state(1), 4, alone, rows(0, 1), to_physical, SEED, progress=False)
    a, b = read(tmp_path / "a.zarr"), read(tmp_path / "b.zarr")
    xr.testing.assert_identical(a.sel(number=1), b.sel(number=1))


def test_rollout_init_times_batched_equal_one_at_a_time(tmp_path: Path) -> None:
    """Rows of two init times in one batch (each forced at its own valid time) give the per-init rollouts."""
    together, apart = make_store(tmp_path / "a.zarr", 4), make_store(tmp_path / "b.zarr", 4)
    mixed = [(1, 2), (0, 0), (1, 0), (0, 1)]
    rollout(toy_step, init_state(4), 4, together, mixed, to_physical, SEED, progress=False)
    for i in (0, 1):
        members = [m for j, m in mixed if j == i]
        rollout(toy_step, init_state(2), 4, apart, rows(i, *members), to_physical, SEED, progress=False)
    a, b = read(tmp_path / "a.zarr"), read(tmp_path / "b.zarr")
    xr.testing.assert_identical(a, b)
    for i, m in mixed:
        for k, fields in enumerate(reference(i, m, 4)):
            np.testing.assert_array_equal(a["2m_temperature"][i, k, m], fields["2m_temperature"])
    assert not np.array_equal(a["2m_temperature"][0, :, 0], a["2m_temperature"][1, :, 0])


class Killed(Exception):
    pass


def test_rollout_resume_after_kill_is_bitwise(tmp_path: Path) -> None:
    full = make_store(tmp_path / "full.zarr", 8)
    rollout(toy_step, init_state(3), 8, full, rows(0, 0, 1, 2), to_physical, SEED, progress=False)

    calls = 0

    def dying_step(state: torch.Tensor, gens: Sequence[torch.Generator], valid: object) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise Killed
        return toy_step(state, gens, valid)

    path = tmp_path / "resumed.zarr"
    with pytest.raises(Killed):
        rollout(dying_step, init_state(3), 8, make_store(path, 8), rows(0, 0, 1, 2), to_physical, SEED,
                progress=False)
    assert ForecastStore.open(path).completed(0, 1) == 3
    rollout(toy_step, init_state(3), 8, ForecastStore.open(path), rows(0, 0, 1, 2), to_physical, SEED,
            progress=False)
    xr.testing.assert_identical(read(tmp_path / "full.zarr"), read(path))


def test_rollout_resume_after_kill_between_members(tmp_path: Path) -> None:
    full = make_store(tmp_path / "full.zarr", 5)
    rollout(toy_step, init_state(3), 5, full, rows(0, 0, 1, 2), to_physical, SEED, progress=False)

    path = tmp_path / "resumed.zarr"
    store = make_store(path, 5)
    writes = 0
    original = store.write

    def dying_write(*args: object, **kwargs: object) -> None:
        nonlocal writes
        writes += 1
        if writes == 8:  # step 3, member 1: member 0 has 3 steps, members 1 and 2 have 2
            raise Killed
        original(*args, **kwargs)

    store.write = dying_write  # type: ignore[method-assign]
    with pytest.raises(Killed):
        rollout(toy_step, init_state(3), 5, store, rows(0, 0, 1, 2), to_physical, SEED, progress=False)
    reopened = ForecastStore.open(path)
    assert [reopened.completed(0, m) for m in range(3)] == [3, 2, 2]
    rollout(toy_step, init_state(3), 5, reopened, rows(0, 0, 1, 2), to_physical, SEED, progress=False)
    xr.testing.assert_identical(read(tmp_path / "full.zarr"), read(path))


def test_forecast_store_opens_in_wb2_layout(tmp_path: Path) -> None:
    store = make_store(tmp_path / "f.zarr", 3, grid=(5, 12))
    rollout(toy_step, init_state(3, (5, 12)), 2, store, rows(0, 0, 1, 2), to_physical, SEED, progress=False)
    ds = xr.open_zarr(tmp_path / "f.zarr")
    assert set(ds.data_vars) == {"temperature", "2m_temperature", "completed_steps"}
    forecast_dims = ("time", "prediction_timedelta", "number")
    assert ds["temperature"].dims == (*forecast_dims, "level", "latitude", "longitude")
    assert ds["2m_temperature"].dims == (*forecast_dims, "latitude", "longitude")
    assert ds["temperature"].dtype == np.float32 and ds["completed_steps"].dtype == np.int32
    assert ds["time"].dtype == np.dtype("datetime64[ns]")
    assert ds["prediction_timedelta"].dtype == np.dtype("timedelta64[ns]")
    np.testing.assert_array_equal(ds["time"], INITS)
    assert ds["prediction_timedelta"].values.astype("timedelta64[h]").astype(int).tolist() == [6, 12, 18]
    assert ds["level"].values.tolist() == LEVELS and ds["number"].values.tolist() == [0, 1, 2]
    assert ds.sizes["latitude"] == 5 and ds.sizes["longitude"] == 12 and ds.attrs["model"] == "toy"
    assert ds["temperature"].encoding["chunks"] == (1, 1, 1, 2, 5, 12)
    written = ds["2m_temperature"].isel(time=0)
    assert np.isfinite(written.isel(prediction_timedelta=slice(0, 2))).all()
    assert np.isnan(written.isel(prediction_timedelta=2)).all()


def test_rollout_nan_names_init_member_step(tmp_path: Path) -> None:
    calls = 0

    def blow_up(state: torch.Tensor, gens: Sequence[torch.Generator], valid: object) -> torch.Tensor:
        nonlocal calls
        calls += 1
        new = toy_step(state, gens, valid)
        if calls == 3:  # step 3; all three members are still in the batch
            new[1, 0, 0, 0] = float("nan")
        return new

    path = tmp_path / "f.zarr"
    with pytest.raises(RolloutError, match=r"init 2020-01-03T12:00:00.*member 1, step 3") as err:
        rollout(blow_up, init_state(3), 5, make_store(path, 5), rows(1, 0, 1, 2), to_physical, SEED,
                progress=False)
    assert err.value.failures == [(INITS[1], 1, 3)]
    ds = read(path)
    assert ds["completed_steps"].isel(time=1).values.tolist() == [5, 2, 5]
    t2m = ds["2m_temperature"].isel(time=1, number=1)
    assert np.isfinite(t2m.isel(prediction_timedelta=slice(0, 2))).all()
    assert np.isnan(t2m.isel(prediction_timedelta=slice(2, None))).all()
    np.testing.assert_array_equal(t2m.isel(prediction_timedelta=1), reference(1, 1, 2)[1]["2m_temperature"])


def test_rollout_memory_does_not_grow_with_steps(tmp_path: Path) -> None:
    grid = (16, 32)

    def peak(n_steps: int) -> tuple[int, int]:
        """tracemalloc peak (numpy fields) and live tensors left behind (torch states)."""
        store = make_store(tmp_path / f"m{n_steps}.zarr", n_steps, members=2, grid=grid)
        gc.collect()
        tensors_before = sum(type(o) is torch.Tensor for o in gc.get_objects())
        tracemalloc.start()
        rollout(toy_step, init_state(2, grid), n_steps, store, rows(0, 0, 1), to_physical, SEED, progress=False)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        gc.collect()
        return top, sum(type(o) is torch.Tensor for o in gc.get_objects()) - tensors_before

    (short, short_tensors), (long, long_tensors) = peak(3), peak(20)
    slab_bytes = 2 * 3 * grid[0] * grid[1] * 8  # two members, three float64 fields per step
    assert long - short < 3 * slab_bytes, (short, long)  # holding 17 extra steps would add 17 slabs
    assert long_tensors == short_tensors == 0


def test_forecast_store_rejects_bad_slabs(tmp_path: Path) -> None:
    store = make_store(tmp_path / "f.zarr", 2)
    good = {"temperature": np.zeros((2, 4, 8)), "2m_temperature": np.zeros((4, 8))}
    with pytest.raises(ValueError, match="exactly variables"):
        store.write(0, 0, 0, {"temperature": good["temperature"]})
    with pytest.raises(ValueError, match="2m_temperature: slab shape"):
        store.write(0, 0, 0, {**good, "2m_temperature": np.zeros((8, 4))})
    with pytest.raises(IndexError, match="lead index 2"):
        store.write(0, 2, 0, good)
    with pytest.raises(ValueError, match="only 2 leads"):
        rollout(toy_step, init_state(3), 3, store, rows(0, 0, 1, 2), to_physical, SEED, progress=False)
