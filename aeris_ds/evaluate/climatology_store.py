"""A published climatology (WeatherBench2 layout: dims ``dayofyear`` 1–366 and ``hour``, plus [level], latitude,
longitude in any order and orientation, any number of variables and levels) put on a forecast's grid, for ACC
and the climatology baseline.

The store is opened read-only; only the variables, levels and grid points the forecast needs are loaded.
"""

from __future__ import annotations

from pathlib import Path

import xarray as xr

from aeris_ds.data.schema import open_store
from aeris_ds.evaluate.inputs import on_forecast, open_input


def load_climatology(path: str | Path, variables: list[str], forecast: xr.Dataset) -> xr.Dataset:
    """Climatology of ``variables`` at the forecast's levels and grid, dims (dayofyear, hour, [level], lat, lon);
    ``forecast`` holds only the levels to score (as :func:`~aeris_ds.evaluate.inputs.load_inputs` returns it)."""
    clim = on_forecast(open_input(path, "climatology", open_store), forecast, variables, "climatology", path,
                       dims=("dayofyear", "hour"))
    return clim.transpose("dayofyear", "hour", ...).load()
