"""The model's grid as a view of a store's grid: reorder, crop or pad in the reader, never in a copy.

The model sees latitude ascending and longitude ascending in [0, 360). A store may hold latitude descending
(ERA5 as ECMWF writes it) or ascending (WeatherBench2), longitude in [0, 360) or [−180, 180), and a grid with
both poles (121 or 721 rows) that no window divides. ``data.grid_adapt`` says how its rows become the
model's ``grid.lat`` rows:

* ``none``        the store's rows as they are (reordered);
* ``drop_poles``  drop the rows at ±90°;
* ``crop``        drop rows at the edges, the south one first when the excess is odd (721 → 720 drops the
                  south pole, as AERIS does with ERA5);
* ``pad``         repeat the edge rows, labelled ±90° so that their latitude weight cos φ is zero: they carry
                  no loss, no statistics and no score, and forecasts write only the store's rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import xarray as xr

GridAdapt = Literal["none", "drop_poles", "crop", "pad"]
_POLE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class AdaptedGrid:
    """Model rows/cols as indices into the store's, and the model's coordinates."""

    lat: np.ndarray  # [model rows] degrees, ascending (padding rows at ±90)
    lon: np.ndarray  # [model cols] degrees in [0, 360), ascending
    rows: np.ndarray  # store row of each model row
    cols: np.ndarray  # store column of each model column
    real: slice  # model rows that are store rows (everything but padding)
    description: str

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.lat), len(self.lon)


def adapt_grid(store_lat: np.ndarray, store_lon: np.ndarray, mode: GridAdapt = "none",
               rows: int | None = None) -> AdaptedGrid:
    """The model grid of ``mode`` over a store's coordinates; ``rows``: the model's row count (grid.lat),
    needed by ``crop`` and ``pad``. ValueError when the result cannot be that grid."""
    store_lat, store_lon = np.asarray(store_lat, np.float64), np.asarray(store_lon, np.float64)
    order = np.argsort(store_lat, kind="stable")
    lat = store_lat[order]
    if lat.size > 1 and not np.all(np.diff(lat) > 0):
        raise ValueError("latitude has repeated values")
    lon360 = np.mod(store_lon, 360.0)
    cols = np.argsort(lon360, kind="stable")
    if lon360.size > 1 and not np.all(np.diff(lon360[cols]) > 0):
        raise ValueError("longitude has repeated values (modulo 360)")
    south, north = 0, 0
    if mode == "drop_poles":
        keep = np.abs(np.abs(lat) - 90.0) > _POLE_TOLERANCE
        order, lat = order[keep], lat[keep]
    elif mode in ("crop", "pad"):
        if rows is None:
            raise ValueError(f"grid_adapt {mode} needs the model's row count (grid.lat)")
        excess = len(lat) - rows
        if mode == "crop":
            if excess < 0:
                raise ValueError(f"cannot crop {len(lat)} latitudes to {rows}: use grid_adapt pad")
            keep = slice(excess - excess // 2, len(lat) - excess // 2)
            order, lat = order[keep], lat[keep]
        else:
            if excess > 0:
                raise ValueError(f"cannot pad {len(lat)} latitudes to {rows}: use grid_adapt crop")
            south, north = -excess - (-excess) // 2, (-excess) // 2
            order = np.concatenate([np.repeat(order[:1], south), order, np.repeat(order[-1:], north)])
            lat = np.concatenate([np.full(south, -90.0), lat, np.full(north, 90.0)])
    flips = []
    if store_lat.size > 1 and store_lat[0] > store_lat[-1]:
        flips.append("latitude descending → ascending")
    if np.any(store_lon < 0):
        flips.append("longitude [−180, 180) → [0, 360)")
    changed = {"drop_poles": "poles dropped", "crop": "rows cropped",
               "pad": f"{south}+{north} rows padded"}.get(mode)
    if changed and len(lat) == len(store_lat):
        changed = None
    words = ", ".join(flips + ([changed] if changed else [])) or "as stored"
    description = f"store {len(store_lat)}×{len(store_lon)} → model {len(lat)}×{len(lon360)} ({words})"
    return AdaptedGrid(lat, lon360[cols], order, cols, slice(south, len(lat) - north), description)


def select_grid(ds: xr.Dataset, latitude: np.ndarray, longitude: np.ndarray) -> xr.Dataset:
    """``ds`` at exactly these (ascending, [0, 360)) coordinates, whatever its own orientation: how evaluate
    puts truth and climatology stores on a forecast's grid. KeyError naming a coordinate it lacks."""
    ds = ds.assign_coords(longitude=np.mod(ds["longitude"].values, 360.0))
    picked = {}
    for name, want in (("latitude", np.asarray(latitude)), ("longitude", np.asarray(longitude))):
        have = ds[name].values
        nearest = np.abs(have[None, :] - want[:, None]).argmin(axis=1)
        off = np.abs(have[nearest] - want) > 1e-3
        if off.any():
            raise KeyError(f"{name} {want[off][0]:g} is not on the grid ({have.min():g}..{have.max():g}, "
                           f"{have.size} points)")
        picked[name] = nearest
    return ds.isel(picked).assign_coords(latitude=np.asarray(latitude), longitude=np.asarray(longitude))
