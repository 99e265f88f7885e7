"""Geometry of the equiangular lat/lon grid, shared by the data (synthetic stores) and the model (default
coordinates when no store gives them)."""

from __future__ import annotations

import numpy as np


def grid_latitudes(n_lat: int) -> np.ndarray:
    """Cell-centre latitudes of an equiangular grid without pole rows, ascending (−90 → 90)."""
    step = 180.0 / n_lat
    return -90.0 + step / 2 + step * np.arange(n_lat)


def grid_longitudes(n_lon: int) -> np.ndarray:
    """Longitudes from 0° eastward, evenly spaced over the full circle."""
    return np.arange(n_lon) * (360.0 / n_lon)
