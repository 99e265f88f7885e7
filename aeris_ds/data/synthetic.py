"""A small analytic store in the WeatherBench2 schema: travelling, interacting waves on the sphere.

For fast tests of the training and forecast code paths; the default dataset is the Held–Suarez run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from aeris_ds.data.schema import write_store
from aeris_ds.grid import grid_latitudes, grid_longitudes

BASE = {"geopotential": (5.5e4, 2e3), "temperature": (250.0, 10.0), "u_component_of_wind": (10.0, 8.0),
        "v_component_of_wind": (0.0, 5.0), "2m_temperature": (285.0, 12.0),
        "mean_sea_level_pressure": (1.01e5, 1e3)}


def synthetic_store(path: str | Path, n_lat: int = 16, n_lon: int = 32, days: float = 20,
                    levels: tuple[int, ...] = (500, 850), seed: int = 0) -> Path:
    """Write the store (6-hourly) with train/valid/test splits of 60/20/20 % of the times."""
    ds = synthetic_dataset(grid_latitudes(n_lat), grid_longitudes(n_lon), days, levels, seed)
    return write_store(ds, path, inner_chunks={"latitude": 8, "longitude": 16})


def synthetic_dataset(lat: np.ndarray, lon: np.ndarray, days: float = 20, levels: tuple[int, ...] = (500, 850),
                      seed: int = 0) -> xr.Dataset:
    """The fields on any latitudes/longitudes (degrees, in the order given), with split attributes."""
    rng = np.random.default_rng(seed)
    times = np.datetime64("2000-01-01T00") + np.arange(int(days * 4)) * np.timedelta64(6, "h")
    n_lat, n_lon = len(lat), len(lon)
    phi, lam = np.deg2rad(lat)[:, None], np.deg2rad(lon)[None, :]
    hours = (times - times[0]) / np.timedelta64(1, "h")

    def field(mean: float, amp: float) -> np.ndarray:
        out = np.zeros((len(times), n_lat, n_lon))
        for k in (1, 2, 3, 5):
            speed, phase, a = rng.uniform(-0.05, 0.05), rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 1) / k
            envelope = np.cos(phi) ** k * (1 + 0.3 * np.sin(2 * np.pi * hours / rng.uniform(50, 200)))[:, None, None]
            out += a * envelope * np.cos(k * (lam - speed * hours[:, None, None]) + phase + np.sin(2 * phi))
        return (mean + amp * (np.sin(phi) + out)).astype(np.float32)

    data = {}
    for name in ("geopotential", "temperature", "u_component_of_wind", "v_component_of_wind"):
        mean, amp = BASE[name]
        data[name] = (("time", "level", "latitude", "longitude"),
                      np.stack([field(mean * (1 + 0.1 * i), amp) for i in range(len(levels))], axis=1))
    for name in ("2m_temperature", "mean_sea_level_pressure"):
        data[name] = (("time", "latitude", "longitude"), field(*BASE[name]))
    data["geopotential_at_surface"] = (("latitude", "longitude"), np.zeros((n_lat, n_lon), np.float32))
    data["land_sea_mask"] = (("latitude", "longitude"), (np.cos(3 * lam) * np.cos(phi) > 0.3).astype(np.float32))
    n = len(times)
    cut = [times[0], times[int(0.6 * n) - 1], times[int(0.6 * n)], times[int(0.8 * n) - 1], times[int(0.8 * n)],
           times[-1]]
    attrs = {"title": "aeris-ds synthetic travelling waves",
             "split_train": f"{cut[0]}/{cut[1]}", "split_valid": f"{cut[2]}/{cut[3]}",
             "split_test": f"{cut[4]}/{cut[5]}"}
    return xr.Dataset(data, coords={"time": times, "level": np.array(levels, dtype=np.int64),
                                    "latitude": lat, "longitude": lon}, attrs=attrs)
