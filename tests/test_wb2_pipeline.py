"""A WeatherBench2-layout store (zarr v2, consolidated, whole-globe chunks, 33×64 with poles, latitude
descending, no split attributes) trains, forecasts and scores from the YAML alone, and is never written into;
`aeris-ds rechunk` rewrites it value-identically so that WP ranks read only their windows."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml
from ranks import run_ranks
from wb2 import N_LON, tree_hash, wb2_dataset, write_wb2
from zarr.storage import LocalStore

from aeris_ds.config import load_config
from aeris_ds.data import rechunk as rechunk_mod
from aeris_ds.data import schema
from aeris_ds.data.rechunk import rechunk
from aeris_ds.data.source import CountingStore, WeatherSource
from aeris_ds.data.stats import compute_stats, load_stats, save_stats
from aeris_ds.evaluate.baselines import compute_climatology
from aeris_ds.examples import TrainingExamples
from aeris_ds.parallel.layout import WindowGrid

SPLITS = {"train": "2000-01-01/2000-01-04", "valid": "2000-01-05/2000-01-05", "test": "2000-01-06/2000-01-06"}
GRID = (32, N_LON)


def _config(tmp, store, name: str, **layout) -> str:
    """The user's YAML: store, splits and grid adaptation; nothing is written into the store."""
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "model": {"dim": 32, "depth": 2, "heads": 4, "window": [8, 8], "pos_freqs": 2, "noise_freqs": 8},
        "grid": {"lat": GRID[0], "lon": GRID[1]},
        "data": {"store": str(store), "splits": SPLITS, "grid_adapt": "crop", "levels": [500, 850],
                 "forcings": ["toa_solar", "statics", "time"], "workers": 0, "preload": True},
        "layout": layout,
        "train": {"steps": 2, "log_every": 1, "wandb_mode": "disabled", "ds_config": "ds_configs/zero1_fp32.json",
                  "out_dir": str(tmp / f"run_{name}")}}))
    return str(path)


@pytest.fixture(scope="module")
def wb2(tmp_path_factory):
    """The WB2 store, its rechunked copy (both with stats beside them) and the store's hash, checked at the end."""
    tmp = tmp_path_factory.mktemp("wb2pipe")
    store = write_wb2(wb2_dataset(descending=True, lon_180=False), tmp / "era5_wb2.zarr")
    before = tree_hash(store)
    cfg = load_config(_config(tmp, store, "probe"))
    save_stats(compute_stats(WeatherSource(store, cfg.data, "train", grid=GRID), progress=False), store)
    sharded = rechunk(store, tmp / "era5_sharded.zarr", cfg, memory_mb=0.5, progress=False)
    save_stats(compute_stats(WeatherSource(sharded, cfg.data, "train", grid=GRID), progress=False), sharded)
    yield {"tmp": tmp, "store": store, "sharded": sharded, "cfg": cfg}
    assert tree_hash(store) == before, "the WB2 store was written into"


def test_rechunk_round_trip_is_value_identical(wb2):
    cfg, grid = wb2["cfg"], GRID
    every = np.arange(grid[0]), np.arange(grid[1])
    a = WeatherSource(wb2["store"], cfg.data, grid=grid)
    b = WeatherSource(wb2["sharded"], cfg.data, grid=grid)
    np.testing.assert_array_equal(a.read_times(slice(None), *every), b.read_times(slice(None), *every))
    np.testing.assert_array_equal(a.static("land_sea_mask", *every), b.static("land_sea_mask", *every))
    assert load_stats(wb2["store"], cfg.data.channel_names, 6) == load_stats(wb2["sharded"], cfg.data.channel_names, 6)
    arr = b.arrays["geopotential"]
    assert arr.shards is not None and arr.chunks[-2:] == (8, 8)  # window-sized inner chunks
    # Without a config: every variable, reoriented, equal to xarray's own reorientation of the source.
    whole = rechunk(wb2["store"], wb2["tmp"] / "whole.zarr", memory_mb=0.3, progress=False)
    want = schema.open_store(wb2["store"]).sortby("latitude").load()
    got = schema.open_store(whole).load()
    xr.testing.assert_equal(got.drop_attrs(), want[list(got.data_vars)].transpose("time", "level", ...).drop_attrs())


def test_rechunk_resumes_after_a_kill(wb2, monkeypatch):
    cfg, dst = wb2["cfg"], wb2["tmp"] / "resumed.zarr"
    real, calls = rechunk_mod.schema.update_attrs, []

    def dies_on_the_third_slab(path, attrs):  # the third slab is appended, its progress never recorded
        calls.append(attrs)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(path, attrs)

    monkeypatch.setattr(rechunk_mod.schema, "update_attrs", dies_on_the_third_slab)
    with pytest.raises(KeyboardInterrupt):
        rechunk(wb2["store"], dst, cfg, memory_mb=0.5, progress=False)
    assert not dst.exists() and (dst.parent / f".{dst.name}.partial").exists()
    monkeypatch.setattr(rechunk_mod.schema, "update_attrs", real)
    rechunk(wb2["store"], dst, cfg, memory_mb=0.5, progress=False)
    xr.testing.assert_equal(schema.open_store(dst).load(), schema.open_store(wb2["sharded"]).load())


def _rank_reads(path, cfg, wp: int) -> list[int]:
    """Bytes of one sample that each WP rank reads, counted under the reader."""
    stats = load_stats(path, cfg.data.channel_names, 6)
    one = cfg.model_copy(update={"data": cfg.data.model_copy(update={"preload": False})})
    out = []
    for w in range(wp):
        store = CountingStore(LocalStore(path, read_only=True))
        ex = TrainingExamples(WeatherSource(path, one.data, "train", store=store, grid=GRID), stats, one,
                              WindowGrid(*GRID, (8, 8), wp, 1), w, 0, 0)
        store.reset()
        ex.example(3, 0)
        out.append(sum(store.chunks.values()))
    return out


def test_wp2_reads_only_its_windows_after_rechunk(wb2):
    cfg = wb2["cfg"]
    whole = _rank_reads(wb2["sharded"], cfg, 1)[0]
    halves = _rank_reads(wb2["sharded"], cfg, 2)
    for part in halves:
        assert part == pytest.approx(whole / 2, rel=0.1)
    rechunk_mod._warned.clear()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        wasteful = _rank_reads(wb2["store"], cfg, 2)  # whole-globe chunks: each rank decodes the whole field
    assert all(part >= 0.9 * max(wasteful) for part in wasteful)
    msgs = [str(w.message) for w in seen if "aeris-ds rechunk" in str(w.message)]
    assert len(msgs) == 1 and "2.1× its share" in msgs[0], msgs


def _train(config: str) -> list[float]:
    from aeris_ds.config import load_config, load_ds_config
    from aeris_ds.train import run

    cfg = load_config(config)
    summary = run(cfg, load_ds_config(cfg.train.ds_config))
    return [r["loss"] for r in summary["history"]], summary["weights"]


def _forecast(weights: str, store: str, out: str) -> str:
    import torch.distributed as dist

    from aeris_ds.diffusion.sampler import SamplerConfig
    from aeris_ds.forecast.driver import run_forecast

    dist.init_process_group("gloo")
    return str(run_forecast(weights, store, out, "test:1", 2, "12h", SamplerConfig(steps=2), progress=False))


def test_train_forecast_evaluate_from_the_yaml_alone(wb2):
    from aeris_ds.cli import main

    tmp = wb2["tmp"]
    (one,) = run_ranks(1, _train, _config(tmp, wb2["store"], "one"), tmp=tmp / "r1")
    two = run_ranks(2, _train, _config(tmp, wb2["sharded"], "wp2", wp=2), tmp=tmp / "r2")
    np.testing.assert_allclose(two[0][0], one[0], rtol=1e-5)  # same data, any layout: the same loss
    fc = run_ranks(1, _forecast, one[1], str(wb2["store"]), str(tmp / "fc.zarr"), tmp=tmp / "rf")[0]
    forecast = xr.open_zarr(fc)
    assert forecast.sizes["latitude"] == 32 and forecast["latitude"].values[0] == -84.375  # south pole cropped
    # WB2's climatology layout: dims (hour, dayofyear, ...), latitude descending with both poles, zarr v2.
    truth = wb2_dataset(descending=True, lon_180=False)
    clim = compute_climatology(truth.sel(time=slice("2000-01-01", "2000-01-04"))[["geopotential"]], window_days=2)
    clim.transpose("hour", "dayofyear", "level", "longitude", "latitude").to_zarr(
        tmp / "clim.zarr", zarr_format=2, consolidated=True)
    common = [fc, "--truth", str(wb2["store"]), "--variables", "geopotential", "--levels", "500"]
    main(["evaluate", *common, "--climatology", str(tmp / "clim.zarr"), "--out", str(tmp / "s_store")])
    main(["evaluate", *common, "--climatology-from", "2000-01-01/2000-01-04", "--climatology-window-days", "2",
          "--out", str(tmp / "s_fit")])
    from_store, fitted = (pd.read_csv(tmp / name / "scores.csv") for name in ("s_store", "s_fit"))
    assert set(from_store["metric"]) >= {"acc", "rmse"} and len(from_store) == len(fitted)
    pd.testing.assert_frame_equal(from_store, fitted, rtol=1e-6)  # the store's float32 round trip only
