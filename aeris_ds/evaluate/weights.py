"""Latitude weights for global means on regular latitude/longitude grids.

Two conventions are in use and they change scores in the third digit, so every caller names one:

- ``"area"`` (default, WeatherBench2's current code): the weight of a row is the area of its cell,
  sin(lat of the northern edge) - sin(lat of the southern edge), with edges halfway between rows and
  the outermost edges at ±90°; normalized to mean 1. A pole row gets a half-height polar cap, so it
  keeps a small positive weight instead of zero.
- ``"cos"``: cos(lat) normalized to mean 1 (older WeatherBench and many papers); pole rows get 0.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import xarray as xr

Weighting = Literal["area", "cos"]
WEIGHTINGS: tuple[str, ...] = ("area", "cos")
SPATIAL_DIMS: tuple[str, str] = ("latitude", "longitude")

_DESCRIPTIONS = {
    "area": "cell-area latitude weights (sin of northern minus sin of southern cell edge, edges midway "
    "between rows and at ±90°, normalized to mean 1; WeatherBench2 convention)",
    "cos": "cos(latitude) weights normalized to mean 1",
}


def check_weighting(weighting: str) -> None:
    """Reject unknown weighting names early, before any arithmetic hides the mistake."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")


def describe_weighting(weighting: str) -> str:
    """Human-readable description used in every score's ``definition`` attribute."""
    check_weighting(weighting)
    return _DESCRIPTIONS[weighting]


def _area_weights(lat_deg: np.ndarray) -> np.ndarray:
    """Cell areas for latitude rows in any order (WB2 requires ascending; we sort and map back)."""
    order = np.argsort(lat_deg)
    lat = np.deg2rad(lat_deg[order])
    edges = np.concatenate([[-np.pi / 2], (lat[:-1] + lat[1:]) / 2, [np.pi / 2]])
    area = np.sin(edges[1:]) - np.sin(edges[:-1])
    out = np.empty_like(area)
    out[order] = area
    return out


def latitude_weights(latitude: xr.DataArray | np.ndarray, weighting: Weighting = "area") -> xr.DataArray:
    """Latitude weights with mean 1 along ``latitude`` (default ``"area"``, see module docstring)."""
    check_weighting(weighting)
    lat = latitude if isinstance(latitude, xr.DataArray) else xr.DataArray(
        np.asarray(latitude, dtype=float), dims="latitude")
    values = np.asarray(lat.values, dtype=float)
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"latitude must be 1-D with at least 2 rows, got shape {values.shape}")
    if np.any(np.abs(values) > 90):
        raise ValueError(f"latitudes must lie in [-90, 90], got range [{values.min()}, {values.max()}]")
    if np.unique(values).size != values.size:
        raise ValueError("latitude has repeated values; expected one row per latitude")
    w = _area_weights(values) if weighting == "area" else np.cos(np.deg2rad(values))
    w = w / w.mean()
    return xr.DataArray(w, dims=lat.dims, coords={lat.dims[0]: values}, name=f"{weighting}_weights")


def spatial_mean(x: xr.Dataset | xr.DataArray, weighting: Weighting = "area",
                 ) -> xr.Dataset | xr.DataArray:
    """Latitude-weighted mean over latitude and longitude (default ``"area"`` weights); NaN propagates.

    The weights have mean 1 over the rows, so the weighted mean is the plain mean of ``w * x``.
    """
    return (x * latitude_weights(x["latitude"], weighting)).mean(SPATIAL_DIMS, skipna=False)
