"""Stores in WeatherBench2's exact layout, built in the tests: zarr v2 with consolidated metadata, one chunk per
time covering the whole globe, both poles, WB2 variable names, no split attributes; latitude descending or
ascending, longitude in [0, 360) or [-180, 180)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import xarray as xr

from aeris_ds.data import solar
from aeris_ds.data.synthetic import synthetic_dataset

N_LAT, N_LON = 33, 64  # a 5.625° analogue of WB2's 121×240 "equiangular with poles"
WB2_LEVELS = (50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000)  # every WB2 13-level store


def wb2_dataset(descending: bool, lon_180: bool, days: float = 6,
                levels: tuple[int, ...] = (500, 850)) -> xr.Dataset:
    lat = np.linspace(-90.0, 90.0, N_LAT)[:: -1 if descending else 1]
    lon = np.arange(N_LON) * 360.0 / N_LON - (180.0 if lon_180 else 0.0)
    ds = synthetic_dataset(lat, lon, days, levels)
    ds.attrs = {}
    toa = solar.toa_incident_solar_radiation(ds["time"].values, lat, lon, integrated=True)
    return ds.assign(toa_incident_solar_radiation=(("time", "latitude", "longitude"), toa))


def write_wb2(ds: xr.Dataset, path: Path) -> Path:
    """Whole-globe chunks of one time, zarr v2, consolidated: as WB2 publishes its ERA5 stores."""
    encoding = {name: {"chunks": (1, *var.shape[1:]) if "time" in var.dims else var.shape}
                for name, var in ds.data_vars.items()}
    ds.to_zarr(path, zarr_format=2, consolidated=True, encoding=encoding)
    return path


def tree_hash(path: Path) -> str:
    """One hash of every file's name and bytes, to show a store was never written into."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()
