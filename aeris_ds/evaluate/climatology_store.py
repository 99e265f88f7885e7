"""A published climatology (WeatherBench2 layout: dims ``dayofyear`` 1–366 and ``hour``, plus [level], latitude,
longitude in any order and orientation) put on a forecast's grid, for ACC and the climatology baseline.

The store is opened read-only; only the variables, levels and grid points the forecast needs are loaded.
"""

from __future__ import annotations

from pathlib import Path

import xarray as xr

from aeris_ds.data.grid_adapt import select_grid
from aeris_ds.data.schema import open_store


def load_climatology(path: str | Path, variables: list[str], forecast: xr.Dataset) -> xr.Dataset:
    """Climatology of ``variables`` at the forecast's levels and grid, dims (dayofyear, hour, [level], lat, lon)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"climatology store {path} does not exist")
    clim = open_store(path)
    missing = [v for v in variables if v not in clim.data_vars]
    if missing:
        raise KeyError(f"climatology {path} lacks {missing} (has {sorted(map(str, clim.data_vars))})")
    clim = clim[variables]
    absent = {"dayofyear", "hour"} - set(clim.dims)
    if absent:
        raise ValueError(f"climatology {path} has dims {sorted(map(str, clim.dims))}, not WeatherBench2's "
                         f"(dayofyear, hour, [level], latitude, longitude): {sorted(absent)} missing")
    if "level" in forecast.dims and "level" in clim.dims:
        want = forecast["level"].values
        lacking = sorted(set(want.tolist()) - set(clim["level"].values.tolist()))
        if lacking:
            raise KeyError(f"climatology {path} lacks level(s) {lacking}")
        clim = clim.sel(level=want)
    try:
        clim = select_grid(clim, forecast["latitude"].values, forecast["longitude"].values)
    except KeyError as err:
        raise KeyError(f"climatology {path}: {err.args[0]}") from None
    return clim.transpose("dayofyear", "hour", ...).load()
