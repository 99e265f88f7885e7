"""`aeris-ds evaluate` takes WeatherBench2 truth and climatology stores as they are: 13 levels, more variables
than the forecast, both poles, latitude descending, longitude in [-180, 180), times beyond the forecast's, zarr
v2 consolidated and read-only. Every score, the rank histograms and the stability report equal those against
the same stores trimmed by hand to the forecast's variables, levels and grid."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from wb2 import WB2_LEVELS, tree_hash, wb2_dataset, write_wb2

from aeris_ds.errors import DataError
from aeris_ds.evaluate.baselines import align_truth, compute_climatology
from aeris_ds.evaluate.cli import main

VARIABLES, LEVELS = ["geopotential", "temperature", "2m_temperature"], [500, 850]
INITS, LEADS_H, MEMBERS = ["2000-01-04T00", "2000-01-04T12"], [0, 6, 12, 24], 3
FAST = ["--resamples", "20"]


def _trimmed(ds: xr.Dataset) -> xr.Dataset:
    """By hand: the forecast's variables and levels, latitude ascending without the south pole (the reader's
    `grid_adapt: crop` of 33 rows to 32), longitude in [0, 360)."""
    ds = ds[VARIABLES].sel(level=LEVELS).sortby("latitude").isel(latitude=slice(1, None))
    return ds.assign_coords(longitude=np.mod(ds["longitude"].values, 360.0)).sortby("longitude")


def _forecast(truth: xr.Dataset) -> xr.Dataset:
    """Truth at the valid times plus member noise, in the layout `aeris-ds forecast` writes (float32)."""
    rng = np.random.default_rng(0)
    grid = xr.Dataset(coords={"time": pd.DatetimeIndex(INITS),
                              "prediction_timedelta": pd.to_timedelta(LEADS_H, unit="h")})
    fc = align_truth(truth, grid).drop_vars("valid_time").expand_dims(number=np.arange(MEMBERS), axis=2)
    fc = fc.map(lambda da: da + 0.02 * float(da.std()) * rng.standard_normal(da.shape))
    return fc.transpose("time", "prediction_timedelta", "number", ...).astype(np.float32)


def _read_only(path: Path) -> Path:
    for p in [path, *path.rglob("*")]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return path


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wb2truth")
    truth = wb2_dataset(descending=True, lon_180=True, days=6, levels=WB2_LEVELS)
    # Means by (dayofyear, hour), smoothed over ±1 day (compute_climatology's window is slow at 13 levels).
    clim = compute_climatology(truth.drop_vars(["geopotential_at_surface", "land_sea_mask"]), window_days=0)
    clim = clim.rolling(dayofyear=3, center=True, min_periods=1).mean().astype(np.float32)
    # WB2's climatology layout: (hour, dayofyear, level, longitude, latitude), as published.
    clim = clim.transpose("hour", "dayofyear", "level", "longitude", "latitude")
    paths = {"truth": write_wb2(truth, tmp / "wb2_truth.zarr"), "fc": tmp / "fc.zarr",
             "clim": tmp / "wb2_clim.zarr", "truth_trim": tmp / "truth_trim.zarr", "clim_trim": tmp / "clim_trim.zarr"}
    clim.to_zarr(paths["clim"], zarr_format=2, consolidated=True)
    _trimmed(truth).to_zarr(paths["truth_trim"], zarr_format=2)
    _trimmed(clim).to_zarr(paths["clim_trim"], zarr_format=2)
    _forecast(_trimmed(truth)).to_zarr(paths["fc"], zarr_format=2)
    for name in ("truth", "clim"):
        _read_only(paths[name])
    hashes = {name: tree_hash(paths[name]) for name in ("truth", "clim")}
    yield {k: str(v) for k, v in paths.items()} | {"tmp": tmp, "clim_ds": clim}
    assert {name: tree_hash(Path(paths[name])) for name in hashes} == hashes, "a WB2 store was written into"


def _evaluate(out: Path, fc: str, truth: str, *extra: str) -> dict:
    assert main([fc, "--truth", truth, "--out", str(out), *FAST, *extra]) == 0
    doc = json.loads((out / "scores.json").read_text())
    return {"scores": pd.DataFrame(doc["scores"]), "stability": doc["stability"],
            "ranks": pd.read_csv(out / "rank_histogram.csv")}


def _assert_same(got: dict, want: dict) -> None:
    pd.testing.assert_frame_equal(got["scores"], want["scores"], rtol=1e-12)
    pd.testing.assert_frame_equal(got["ranks"], want["ranks"], rtol=1e-12)
    diag = [pd.DataFrame(d["stability"].pop("diagnostics")) for d in (got, want)]
    pd.testing.assert_frame_equal(*diag, rtol=1e-12)
    assert got["stability"] == want["stability"]


@pytest.mark.parametrize("climatology", ["store", "fitted"])
def test_wb2_truth_and_climatology_score_as_trimmed_by_hand(stores, climatology):
    tmp = stores["tmp"]
    clim = {"store": (["--climatology", stores["clim"]], ["--climatology", stores["clim_trim"]]),
            "fitted": (["--climatology-window-days", "2"],) * 2}[climatology]
    got = _evaluate(tmp / f"wb2_{climatology}", stores["fc"], stores["truth"], *clim[0],
                    "--plots", "headline" if climatology == "store" else "none")
    want = _evaluate(tmp / f"trim_{climatology}", stores["fc"], stores["truth_trim"], *clim[1], "--plots", "none")
    _assert_same(got, want)
    scores = got["scores"]
    assert sorted(scores["variable"].unique()) == sorted(VARIABLES)
    assert sorted(scores["level"].dropna().unique()) == LEVELS
    assert len(scores) == 3 * 15 * len(LEADS_H) * (2 * len(LEVELS) + 1)  # systems × metrics × leads × fields
    assert scores.query("system == 'forecast' and metric == 'rank_outlier_ratio'")["value"].notna().all()
    assert sorted(got["ranks"]["rank"].unique()) == list(range(MEMBERS + 1))
    if climatology == "store":
        assert {"maps_geopotential_500.png", "rank_histogram_temperature_850.png"} <= {
            p.name for p in (tmp / "wb2_store").iterdir()}


def _variant(stores, name: str, ds: xr.Dataset) -> str:
    path = stores["tmp"] / f"{name}.zarr"
    ds.to_zarr(path, zarr_format=2, consolidated=True)
    return str(path)


def test_what_the_wb2_stores_lack_is_one_user_error(stores):
    """A forecast level or variable missing from the truth or the climatology: a DataError naming the store
    and what it lacks, before anything is written."""
    tmp, fc = stores["tmp"], xr.open_zarr(stores["fc"])
    other_level = _variant(stores, "fc_level", fc.assign_coords(level=[500, 875]))
    other_var = _variant(stores, "fc_var", fc.rename({"2m_temperature": "sea_surface_temperature"}))
    no_850 = _variant(stores, "clim_no850", stores["clim_ds"].drop_sel(level=850))
    no_t = _variant(stores, "clim_no_t", stores["clim_ds"].drop_vars("temperature"))
    cases = [
        ([other_level, "--truth", stores["truth"]], r"truth .*wb2_truth\.zarr lacks level\(s\) \[875\.0\]"),
        ([other_var, "--truth", stores["truth"]],
         r"truth .*wb2_truth\.zarr lacks variable\(s\) \['sea_surface_temperature'\]"),
        ([stores["fc"], "--truth", stores["truth"], "--climatology", no_850],
         r"climatology .*clim_no850\.zarr lacks level\(s\) \[850\.0\]"),
        ([stores["fc"], "--truth", stores["truth"], "--climatology", no_t],
         r"climatology .*clim_no_t\.zarr lacks variable\(s\) \['temperature'\]"),
    ]
    for i, (args, message) in enumerate(cases):
        with pytest.raises(DataError, match=message) as err:
            main([*args, "--out", str(tmp / f"refused{i}"), *FAST])
        assert "\n" not in str(err.value)
        assert not (tmp / f"refused{i}").exists()
