"""Known-in-advance inputs of a step: top-of-atmosphere solar radiation, static fields, time of day/year.

A store that holds ERA5's ``toa_incident_solar_radiation`` (J m⁻² over the preceding hour, as WeatherBench2
stores do) gives it at its own times; other times (a rollout past the store's end) get the same quantity
computed, so the forcing is one definition either way. A store without it gets the computed instantaneous
flux. Static fields come from the store (``geopotential_at_surface``, ``land_sea_mask``).
"""

from __future__ import annotations

import numpy as np

from aeris_ds.data import solar
from aeris_ds.data.source import WeatherSource

TOA = "toa_incident_solar_radiation"
_HOUR_OF_SUN = solar.SOLAR_CONSTANT * 3600.0  # J m-2: normalises an hourly accumulation like the flux


class Forcings:
    """[F, rows, cols] forcings at a time, for one rank's block, in the config's order."""

    def __init__(self, source: WeatherSource, names: list[str], rows: np.ndarray, cols: np.ndarray):
        self.source, self.names, self.rows, self.cols = source, names, rows, cols
        self.stored_toa = "toa_solar" in names and TOA in source.ds.data_vars
        self.lat, self.lon = source.lat[rows], source.lon[cols]
        self.statics = None
        if "statics" in names:
            every_row, every_col = np.arange(len(source.lat)), np.arange(len(source.lon))
            fields = []
            for name in ("geopotential_at_surface", "land_sea_mask"):
                whole = source.static(name, every_row, every_col)  # normalise by the whole field, not the block
                fields.append((whole[np.ix_(rows, cols)] - whole.mean()) / (whole.std() or 1.0))
            self.statics = np.stack(fields)

    def __call__(self, time: np.datetime64) -> np.ndarray:
        """Forcings valid at ``time`` (any time: a rollout runs past the store's last one)."""
        shape = (len(self.lat), len(self.lon))
        out = []
        for name in self.names:
            if name == "toa_solar":
                out.append(self.toa(time)[None])
            elif name == "statics":
                out.append(self.statics)
            else:  # "time": phase of the year and of the day
                out.append(np.broadcast_to(time_encoding(time)[:, None, None], (4, *shape)))
        return np.concatenate(out, axis=0).astype(np.float32) if out else np.zeros((0, *shape), np.float32)


    def toa(self, time: np.datetime64) -> np.ndarray:
        """TOA solar radiation at ``time`` over this block, in units of the solar constant."""
        if not self.stored_toa:
            flux = solar.toa_incident_solar_radiation(np.array([time]), self.lat, self.lon)[0]
            return flux / solar.SOLAR_CONSTANT
        at = np.flatnonzero(self.source.times == time)
        if at.size:
            return self.source.read_variable(TOA, at[:1], self.rows, self.cols)[0] / _HOUR_OF_SUN
        energy = solar.toa_incident_solar_radiation(np.array([time]), self.lat, self.lon, integrated=True)[0]
        return energy / _HOUR_OF_SUN


def time_encoding(time: np.datetime64) -> np.ndarray:
    """sin/cos of the fraction of the year and of the (UTC) day."""
    days = (time - time.astype("datetime64[Y]")) / np.timedelta64(1, "D")
    hours = (time - time.astype("datetime64[D]")) / np.timedelta64(1, "h")
    year, day = 2 * np.pi * days / 365.2425, 2 * np.pi * hours / 24
    return np.array([np.sin(year), np.cos(year), np.sin(day), np.cos(day)], dtype=np.float32)
