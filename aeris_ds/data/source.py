"""Reading WeatherBench2-schema zarr stores: the channels a config names, one lat/lon block at a time."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import xarray as xr
from tqdm import tqdm

from aeris_ds.config import DataConfig
from aeris_ds.data.schema import open_store


def open_dataset(path: str | Path) -> xr.Dataset:
    """Lazy open (no dask): every read below goes straight to the chunks it touches."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data store {path} does not exist")
    return open_store(path, chunks=None)


class WeatherSource:
    """Channels of a store in the model's order: atmospheric variables × levels, then surface variables."""

    def __init__(self, path: str | Path, data: DataConfig, split: str | None = None):
        self.path, self.cfg = Path(path), data
        self.ds = open_dataset(path)
        self._check_schema()
        self.times = self.ds["time"].values
        self.split_slice = self._split(split)
        step = np.diff(self.times[:2]).astype("timedelta64[h]").astype(int)[0] if len(self.times) > 1 else 0
        lead = data.lead_hours
        if step <= 0 or lead % step:
            raise ValueError(f"lead {lead} h is not a multiple of the store's time step {step} h ({path})")
        self.lead_steps = lead // step
        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray, int] | None = None

    def _check_schema(self) -> None:
        for name in self.cfg.atmospheric + self.cfg.surface:
            if name not in self.ds:
                raise KeyError(f"variable {name!r} is missing from {self.path} (has: {sorted(self.ds.data_vars)})")
        expected = {"atm": ("time", "level", "latitude", "longitude"), "sfc": ("time", "latitude", "longitude")}
        for kind, names in (("atm", self.cfg.atmospheric), ("sfc", self.cfg.surface)):
            for name in names:
                if self.ds[name].dims != expected[kind]:
                    raise ValueError(f"{name} has dims {self.ds[name].dims}, expected {expected[kind]}")
        if self.cfg.atmospheric:
            have = set(int(v) for v in self.ds["level"].values)
            missing = [lev for lev in self.cfg.levels if lev not in have]
            if missing:
                raise KeyError(f"levels {missing} hPa missing from {self.path} (has {sorted(have)})")
        lat = self.ds["latitude"].values
        if not np.all(np.diff(lat) > 0):
            raise ValueError(f"latitude in {self.path} must be ascending (WeatherBench2 order)")
        dt = np.diff(self.ds["time"].values)
        if len(dt) and not np.all(dt == dt[0]):
            gap = int(np.argmax(dt != dt[0]))
            raise ValueError(f"time gap in {self.path} after {self.ds['time'].values[gap]}")

    def _split(self, split: str | None) -> slice:
        """Index range of a split from the store's ``split_<name>`` attribute ("start/end"), else everything."""
        if split is None:
            return slice(0, len(self.times))
        attr = self.ds.attrs.get(f"split_{split}")
        if attr is None:
            raise KeyError(f"store {self.path} has no split {split!r} (attribute split_{split})")
        start, end = (np.datetime64(s) for s in attr.split("/"))
        idx = np.flatnonzero((self.times >= start) & (self.times <= end))
        return slice(int(idx[0]), int(idx[-1]) + 1)

    @property
    def lat(self) -> np.ndarray:
        return self.ds["latitude"].values

    @property
    def lon(self) -> np.ndarray:
        return self.ds["longitude"].values

    @cached_property
    def level_index(self) -> np.ndarray:
        levels = [int(v) for v in self.ds["level"].values] if self.cfg.atmospheric else []
        return np.array([levels.index(lev) for lev in self.cfg.levels], dtype=np.int64)

    @property
    def n_samples(self) -> int:
        """Initial times t in the split whose target t + lead is also in the split."""
        return max(0, self.split_slice.stop - self.split_slice.start - self.lead_steps)

    def time_index(self, sample: int) -> int:
        return self.split_slice.start + sample

    def read(self, t: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """[C, len(rows), len(cols)] float32 at time index t; only the chunks of that block are read."""
        if self._cache is not None and self._cache[0] is rows and self._cache[1] is cols:
            return self._cache[2][t - self._cache[3]]
        return self.read_times(slice(t, t + 1), rows, cols)[0]

    def read_times(self, times: slice, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """[T, C, len(rows), len(cols)] float32: one read per variable for a run of times."""
        out = []
        sel = {"time": times, "latitude": rows, "longitude": cols}
        for name in self.cfg.atmospheric:
            out.append(np.asarray(self.ds[name].isel({**sel, "level": self.level_index}).values, dtype=np.float32))
        for name in self.cfg.surface:
            out.append(np.asarray(self.ds[name].isel(sel).values, dtype=np.float32)[:, None])
        field = np.concatenate(out, axis=1)
        finite = np.isfinite(field).all(axis=(2, 3))
        if not finite.all():
            t, c = np.argwhere(~finite)[0]
            raise ValueError(f"non-finite values in {self.cfg.channel_names[c]} at "
                             f"{self.times[times][t]} in {self.path}")
        return field

    def preload(self, rows: np.ndarray, cols: np.ndarray, progress: bool = True) -> None:
        """Hold this block of the whole split (plus the lead) in memory: only this rank's share is read."""
        start, stop = self.split_slice.start, min(len(self.times), self.split_slice.stop)
        slabs = [self.read_times(slice(a, min(a + 64, stop)), rows, cols)
                 for a in tqdm(range(start, stop, 64), desc="preload", disable=not progress, leave=False)]
        self._cache = (rows, cols, np.concatenate(slabs), start)

    def static(self, name: str, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        if name not in self.ds:
            return np.zeros((len(rows), len(cols)), dtype=np.float32)
        return np.asarray(self.ds[name].isel(latitude=rows, longitude=cols).values, dtype=np.float32)
