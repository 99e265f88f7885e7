"""Reference forecasts (persistence, climatology) and truth alignment, all in the WB2 forecast layout.

Forecast layout: (time = init time, prediction_timedelta, number, [level], latitude, longitude). The
baselines are one-member ensembles (``number`` of size 1) so the same metric code scores all systems.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

TIME, LEAD, MEMBER = "time", "prediction_timedelta", "number"


def _require_times(truth: xr.Dataset, times: np.ndarray, purpose: str) -> None:
    """Fail with the missing timestamps named, instead of a bare KeyError deep inside xarray."""
    wanted = np.unique(np.asarray(times, dtype="datetime64[ns]").ravel())
    missing = wanted[~np.isin(wanted, truth[TIME].values.astype("datetime64[ns]"))]
    if missing.size:
        shown = ", ".join(str(t)[:19] for t in missing[:10])
        more = f" (and {missing.size - 10} more)" if missing.size > 10 else ""
        raise KeyError(f"truth lacks {missing.size} time(s) needed for {purpose}: {shown}{more}")


def valid_times(forecast: xr.Dataset) -> xr.DataArray:
    """Valid time = init time + lead, with dims (time, prediction_timedelta)."""
    return forecast[TIME] + forecast[LEAD]


def _at_times(truth: xr.Dataset, times: xr.DataArray, purpose: str) -> xr.Dataset:
    """Truth sampled at a (time, prediction_timedelta) grid of timestamps, keeping the grid's coords."""
    _require_times(truth, times.values, purpose)
    picked = truth.sel({TIME: xr.DataArray(times.values, dims=("_init", "_lead"))}).drop_vars(TIME)
    return picked.rename({"_init": TIME, "_lead": LEAD}).assign_coords(
        {TIME: times[TIME].values, LEAD: times[LEAD].values, "valid_time": ((TIME, LEAD), times.values)})


def align_truth(truth: xr.Dataset, forecast: xr.Dataset) -> xr.Dataset:
    """Truth at each forecast's valid time, dims (time, prediction_timedelta, [level], lat, lon)."""
    return _at_times(truth, valid_times(forecast), "the forecast valid times (init + lead)")


def persistence(truth: xr.Dataset, init_times: np.ndarray, leads: np.ndarray) -> xr.Dataset:
    """Persistence: the truth at each init time, repeated over ``leads``; a one-member forecast."""
    grid = xr.DataArray(np.asarray(init_times, dtype="datetime64[ns]"), dims=TIME,
                        coords={TIME: np.asarray(init_times, dtype="datetime64[ns]")})
    leads_da = xr.DataArray(np.asarray(leads, dtype="timedelta64[ns]"), dims=LEAD,
                            coords={LEAD: np.asarray(leads, dtype="timedelta64[ns]")})
    init_grid = (grid + 0 * leads_da).transpose(TIME, LEAD)
    fc = _at_times(truth, init_grid, "persistence (init times)").drop_vars("valid_time")
    return fc.expand_dims({MEMBER: [0]}, axis=2)


def compute_climatology(truth: xr.Dataset, *, window_days: int = 0, days: np.ndarray | None = None
                        ) -> xr.Dataset:
    """Mean by (dayofyear, hour) of a training split, optionally smoothed over ±``window_days`` days.

    The smoothing is a cyclic moving average over day of year that pools samples (sums and counts), so
    short records work: a day of year gets a value when any sample lies within the window, and days with
    none are left out (their use is caught in :func:`climatology_forecast`). With ``days`` (days of year),
    only the truth times within the window of those days are read and only those days returned. Layout as
    WB2 climatologies: (dayofyear, hour, [level], latitude, longitude).
    """
    if window_days < 0 or window_days > 183:
        raise ValueError(f"window_days must be in [0, 183], got {window_days}")
    wanted = None if days is None else np.unique(np.asarray(days, dtype=int))
    if wanted is not None:
        near = (wanted[:, None] - 1 + np.arange(-window_days, window_days + 1)) % 366 + 1
        truth = truth.isel({TIME: np.isin(truth[TIME].dt.dayofyear.values, near)})
    truth = truth.load()
    if truth.sizes.get(TIME, 0) == 0:
        raise ValueError("cannot compute a climatology from a truth split with no time steps")
    times = truth[TIME]
    hours = np.unique(times.dt.hour.values)
    # one slot per (hour, day of year): sort the times by slot once, then sum runs with reduceat
    slot = np.searchsorted(hours, times.dt.hour.values) * 366 + times.dt.dayofyear.values - 1
    order = np.argsort(slot, kind="stable")
    slots, starts, n = np.unique(slot[order], return_index=True, return_counts=True)
    count = np.zeros(hours.size * 366)
    count[slots] = n
    count = _cyclic_window(count.reshape(hours.size, 366), window_days)
    present = (count > 0).any(0)
    if wanted is not None:
        present &= np.isin(np.arange(1, 367), wanted)
    fields = {}
    for name, da in truth.data_vars.items():
        da = da.transpose(TIME, ...)
        x = da.values[order]
        total = np.zeros((hours.size * 366, *x.shape[1:]))
        total[slots] = np.add.reduceat(x, starts, axis=0)
        total = _cyclic_window(total.reshape(hours.size, 366, *x.shape[1:]), window_days)
        mean = total[:, present] / count[:, present].reshape(count.shape[0], -1, *[1] * (x.ndim - 1))
        fields[name] = (("hour", "dayofyear", *da.dims[1:]), mean)
    coords = {k: v for k, v in truth.coords.items() if TIME not in v.dims}
    clim = xr.Dataset(fields, coords={**coords, "hour": hours, "dayofyear": np.arange(1, 367)[present]})
    clim = clim.transpose("dayofyear", "hour", ...)
    clim.attrs["definition"] = (f"mean by (dayofyear, hour) over {str(truth[TIME].values[0])[:19]} .. "
                                f"{str(truth[TIME].values[-1])[:19]}, cyclic ±{window_days} day window")
    return clim


def _cyclic_window(a: np.ndarray, window_days: int) -> np.ndarray:
    """Sums over ±window_days along axis 1 (366 days of year), cyclic; NaN only where the window holds one."""
    if window_days == 0:
        return a
    def window_sum(x: np.ndarray) -> np.ndarray:
        w = window_days
        padded = np.concatenate([x[:, -w:], x, x[:, :w]], axis=1)
        c = np.concatenate([np.zeros_like(padded[:, :1]), np.cumsum(padded, axis=1)], axis=1)
        return c[:, 2 * w + 1:] - c[:, :-(2 * w + 1)]

    nan = np.isnan(a)
    out = window_sum(np.where(nan, 0.0, a))
    return np.where(window_sum(nan.astype(float)) > 0, np.nan, out) if nan.any() else out


def climatology_from_store(path: str | Path, time_slice: slice | str, *, window_days: int = 0,
                           variables: list[str] | None = None) -> xr.Dataset:
    """Climatology from a truth zarr store over ``time_slice`` (a slice or "START/END" string)."""
    if isinstance(time_slice, str):
        start, sep, end = time_slice.partition("/")
        if not sep or not start or not end:
            raise ValueError(f"time slice must look like START/END, got {time_slice!r}")
        time_slice = slice(start, end)
    truth = xr.open_zarr(path)
    if variables is not None:
        truth = truth[variables]
    split = truth.sel({TIME: time_slice})
    if split.sizes[TIME] == 0:
        raise ValueError(f"truth store {path} has no times in {time_slice.start}..{time_slice.stop}")
    return compute_climatology(split.load(), window_days=window_days)


def climatology_forecast(climatology: xr.Dataset, forecast: xr.Dataset) -> xr.Dataset:
    """Climatology at every valid time of ``forecast``, as a one-member forecast."""
    valid = valid_times(forecast)
    doy, hour = valid.dt.dayofyear, valid.dt.hour
    have_days = set(climatology["dayofyear"].values.tolist())
    have_hours = set(climatology["hour"].values.tolist())
    missing = sorted({(int(d), int(h)) for d, h in zip(doy.values.ravel(), hour.values.ravel(), strict=True)
                      if d not in have_days or h not in have_hours})
    if missing:
        raise KeyError(f"climatology lacks (dayofyear, hour) pairs needed at valid times: {missing[:10]}; "
                       "widen the climatology window or its time range")
    fc = climatology.sel(dayofyear=doy, hour=hour).drop_vars(["dayofyear", "hour"])
    return fc.transpose(TIME, LEAD, ...).expand_dims({MEMBER: [0]}, axis=2)
