"""Top-of-atmosphere incident solar radiation, a forcing the model gets at every step.

Spencer (1971) Fourier series give the Earth–Sun distance factor, the solar declination and the
equation of time from the fractional day of the year; the cosine of the solar zenith angle then
follows from latitude and the local hour angle. Accuracy is ~0.1% in flux, far below what the
forcing needs.

Default output is the instantaneous flux in W m⁻². ``integrated=True`` returns the energy received
over the preceding hour in J m⁻², like ERA5's ``toa_incident_solar_radiation`` accumulation.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

SOLAR_CONSTANT = 1361.0  # W m-2 (Kopp & Lean 2011)
_NS_PER_DAY = 86_400 * 10**9


def _day_angle(time: np.ndarray) -> np.ndarray:
    """2π·(fractional day of year − 1)/365 for datetime64 values (Spencer's Γ)."""
    t = time.astype("datetime64[ns]")
    year_start = t.astype("datetime64[Y]").astype("datetime64[ns]")
    day = (t - year_start).astype(np.int64) / _NS_PER_DAY  # 0 at Jan 1, 00 UTC
    return 2.0 * np.pi * day / 365.0


def orbital_terms(time: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Earth–Sun inverse-square distance factor, declination [rad], equation of time [min])."""
    g = _day_angle(np.asarray(time))
    c1, s1, c2, s2, c3, s3 = np.cos(g), np.sin(g), np.cos(2 * g), np.sin(2 * g), np.cos(3 * g), np.sin(3 * g)
    distance = 1.000110 + 0.034221 * c1 + 0.001280 * s1 + 0.000719 * c2 + 0.000077 * s2
    declination = (0.006918 - 0.399912 * c1 + 0.070257 * s1 - 0.006758 * c2 + 0.000907 * s2
                   - 0.002697 * c3 + 0.00148 * s3)
    eot_minutes = 229.18 * (0.000075 + 0.001868 * c1 - 0.032077 * s1 - 0.014615 * c2 - 0.040849 * s2)
    return distance, declination, eot_minutes


def _instantaneous(time: np.ndarray, lat_rad: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """Flux for times of shape (T,) on a (lat, lon) grid: returns (T, lat, lon)."""
    distance, decl, eot = orbital_terms(time)
    t = time.astype("datetime64[ns]")
    utc_minutes = (t - t.astype("datetime64[D]")).astype(np.int64) / 6e10
    # Hour angle: 0 at local solar noon; true solar time = UTC + equation of time + 4 min/degree east.
    solar_minutes = utc_minutes[:, None] + eot[:, None] + 4.0 * lon_deg[None, :]
    hour_angle = np.deg2rad(solar_minutes / 4.0 - 180.0)  # (T, lon)
    sin_lat, cos_lat = np.sin(lat_rad), np.cos(lat_rad)
    cos_zenith = (np.sin(decl)[:, None, None] * sin_lat[None, :, None]
                  + np.cos(decl)[:, None, None] * cos_lat[None, :, None] * np.cos(hour_angle)[:, None, :])
    return SOLAR_CONSTANT * distance[:, None, None] * np.maximum(cos_zenith, 0.0)


def toa_incident_solar_radiation(
    time: npt.ArrayLike,
    latitude: npt.ArrayLike,
    longitude: npt.ArrayLike,
    *,
    integrated: bool = False,
    substeps: int = 12,
) -> np.ndarray:
    """TOA incident solar radiation on the (latitude, longitude) grid, shape (time, lat, lon), float32.

    ``time``: datetime64 values (UTC); ``latitude``/``longitude``: 1-D degrees. Instantaneous flux
    [W m⁻²] by default; with ``integrated`` the energy over the hour ending at each time [J m⁻²],
    by the midpoint rule with ``substeps`` samples (the flux is smooth in time).
    """
    time = np.atleast_1d(np.asarray(time, dtype="datetime64[ns]"))
    lat = np.deg2rad(np.atleast_1d(np.asarray(latitude, dtype=np.float64)))
    lon = np.atleast_1d(np.asarray(longitude, dtype=np.float64))
    if not integrated:
        return _instantaneous(time, lat, lon).astype(np.float32)
    hour_ns = 3600 * 10**9
    offsets = ((np.arange(substeps) + 0.5) / substeps * hour_ns - hour_ns).astype("timedelta64[ns]")
    out = np.zeros((time.size, lat.size, lon.size))
    for off in offsets:  # a few substeps, each vectorized over all times and grid points
        out += _instantaneous(time + off, lat, lon)
    return (out * (3600.0 / substeps)).astype(np.float32)
