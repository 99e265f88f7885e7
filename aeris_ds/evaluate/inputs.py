"""The forecast and truth that ``aeris-ds evaluate`` scores, checked before anything is computed or written.

Checks, each a one-line ``DataError`` naming the store: variables and levels present in both; the same grid
(latitude/longitude values, not just an overlap; a truth whose grid holds the forecast's in another
orientation or with more rows, as the reader's ``data.grid_adapt`` sees it, is first put on the forecast's);
the member dimension named ``number``, ``member`` or ``realization`` (renamed to ``number``); no other
dimensions; a complete forecast, from its progress record ``completed_steps`` (or, when asked, only its
leading lead times that every member completed); every init and valid time present in the truth. Fields are
scored in float64 whatever the stores hold.

Truth and climatology stores are taken as published (WeatherBench2's hold 13 or 37 levels, dozens of
variables, both poles): :func:`on_forecast` cuts them to the forecast's variables, levels and grid here,
once, so every metric, rank histogram, plot and the stability report see the same fields.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from aeris_ds.data.grid_adapt import select_grid
from aeris_ds.data.schema import open_store
from aeris_ds.errors import DataError, MissingPathError
from aeris_ds.evaluate.baselines import _require_times as require_times
from aeris_ds.forecast.store import PROGRESS

TIME, LEAD, LEVEL, MEMBER = "time", "prediction_timedelta", "level", "number"
MEMBER_NAMES = (MEMBER, "member", "realization")
GRID = ("latitude", "longitude")
GRID_ATOL = 1e-4  # degrees: float32 and float64 spellings of one grid agree to ~1e-5


@dataclass
class Inputs:
    forecast: xr.Dataset  # lazy, float64, member dim ``number``, only the scored variables, levels, lead times
    truth: xr.Dataset  # lazy, only the scored variables and levels, on the forecast's grid
    variables: list[str]
    levels: list[float] | None  # pressure levels to score; None when no variable has levels
    note: str = ""  # what was left out (an incomplete forecast scored with ``partial``)


def open_input(path: str | Path, what: str, opener: Callable[[str | Path], xr.Dataset]) -> xr.Dataset:
    """``opener(path)``; a missing or unreadable store is a one-line user error naming it."""
    if not Path(path).exists():
        raise MissingPathError(f"{what} store {path} does not exist")
    try:
        return opener(path)
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"cannot open the {what} store {path}: {err}") from err


def _member_dim(forecast: xr.Dataset, path: str | Path) -> xr.Dataset:
    found = [d for d in MEMBER_NAMES if d in forecast.dims]
    if len(found) > 1:
        raise DataError(f"forecast {path} has several member dimensions {found}; expected one of {MEMBER_NAMES}")
    if found and found[0] != MEMBER:
        forecast = forecast.drop_vars([MEMBER], errors="ignore").rename({found[0]: MEMBER})
    return forecast


def _check_dims(ds: xr.Dataset, variables: list[str], allowed: tuple[str, ...], what: str, path) -> None:
    """Only ``allowed`` dims; all of them but ``level`` and the member dim required."""
    for name in variables:
        extra = [d for d in ds[name].dims if d not in allowed]
        if extra:
            hint = f" (an ensemble dimension must be one of {MEMBER_NAMES})" if what == "forecast" else ""
            raise DataError(f"{what} {path}: variable {name} has unknown dimension(s) {extra}{hint}")
        missing = [d for d in allowed if d not in (LEVEL, MEMBER) and d not in ds[name].dims]
        if missing:
            raise DataError(f"{what} {path}: variable {name} lacks dimension(s) {missing}")


def _at_levels(ds: xr.Dataset, wanted: list[float], what: str, path) -> xr.Dataset:
    """``ds`` at exactly these levels, in this order (compared as floats: stores spell them int or float)."""
    have = [float(v) for v in ds[LEVEL].values] if LEVEL in ds.coords else []
    absent = [v for v in wanted if v not in have]
    if absent:
        raise DataError(f"{what} {path} lacks level(s) {absent}; it has {have}")
    return ds.isel({LEVEL: [have.index(v) for v in wanted]})


def _check_variables(ds: xr.Dataset, variables: list[str], what: str, path) -> None:
    missing = [v for v in variables if v not in ds.data_vars]
    if missing:
        raise DataError(f"{what} {path} lacks variable(s) {missing}; it has {sorted(map(str, ds.data_vars))}")


def on_forecast(ds: xr.Dataset, forecast: xr.Dataset, variables: list[str], what: str, path: str | Path,
                dims: tuple[str, ...] = (TIME,)) -> xr.Dataset:
    """A truth or climatology store (lazy) cut to the forecast's ``variables``, its levels and its grid.

    ``forecast`` holds only the levels to score; ``dims``: the store's own dims besides level and grid (time
    for a truth, dayofyear and hour for a climatology). The result carries the forecast's level, latitude and
    longitude values exactly. A ``DataError`` names the store and what it lacks.
    """
    _check_variables(ds, variables, what, path)
    ds = ds[variables]
    _check_dims(ds, variables, (*dims, LEVEL, *GRID), what, path)
    for name in variables:
        if (LEVEL in forecast[name].dims) != (LEVEL in ds[name].dims):
            has = "has" if LEVEL in ds[name].dims else "has no"
            raise DataError(f"{what} {path}: variable {name} {has} level dimension, unlike the forecast")
    if any(LEVEL in forecast[v].dims for v in variables):
        wanted = [float(v) for v in forecast[LEVEL].values]
        ds = _at_levels(ds, wanted, what, path).assign_coords({LEVEL: forecast[LEVEL].values})
    try:  # latitude reversed, longitude in [-180, 180), poles cropped: the reader's view of the store
        return select_grid(ds, forecast["latitude"].values, forecast["longitude"].values)
    except KeyError as err:
        for dim in GRID:  # a grid that does not hold the forecast's: name the difference
            f, t = forecast[dim].values.astype(np.float64), ds[dim].values.astype(np.float64)
            if f.shape != t.shape or not np.allclose(f, t, rtol=0, atol=GRID_ATOL):
                raise DataError(f"forecast and {what} {path} are on different grids: {dim} has {f.size} values "
                                f"{f[0]:g}..{f[-1]:g} in the forecast, {t.size} values {t[0]:g}..{t[-1]:g} in "
                                f"the {what}; regrid one of them") from None
        raise DataError(f"{what} {path}: {err.args[0]}") from None


def _completed(forecast: xr.Dataset, path, partial: bool) -> tuple[xr.Dataset, str]:
    """Only lead times every (init, member) completed; an incomplete forecast needs ``partial``."""
    if PROGRESS not in forecast:
        return forecast, ""
    n_leads = forecast.sizes[LEAD]
    done = forecast[PROGRESS].values
    k = int(done.min()) if done.size else 0
    if k >= n_leads:
        return forecast, ""
    unfinished = int((done < n_leads).sum())
    state = (f"forecast {path} is incomplete: {unfinished} of {done.size} (init, member) rollouts stopped "
             f"before the last of {n_leads} lead times (completed_steps min {k})")
    if not partial:
        raise DataError(f"{state}; rerun the same `aeris-ds forecast` command to finish it, or pass "
                        "--partial to score the completed lead times only")
    if k == 0:
        raise DataError(f"{state}: no lead time is complete for every member, nothing to score")
    last = forecast[LEAD].values[k - 1] / np.timedelta64(1, "h")
    note = (f"partial: {state}; scored only the first {k} of {n_leads} lead times (up to {last:g} h), "
            "which every member completed")
    return forecast.isel({LEAD: slice(0, k)}), note


def _check_times(forecast: xr.Dataset, truth: xr.Dataset, truth_path) -> None:
    valid = (forecast[TIME] + forecast[LEAD]).values.ravel()
    try:
        require_times(truth, np.concatenate([forecast[TIME].values, valid]), "the forecast's init and valid times")
    except KeyError as err:
        raise DataError(f"{truth_path}: {err.args[0]}") from None


def load_inputs(forecast_path: str | Path, truth_path: str | Path, variables: list[str] | None = None,
                levels: list[float] | None = None, partial: bool = False) -> Inputs:
    """Open and check the forecast and truth stores (lazily: nothing is loaded but coordinates); both come
    back holding only the scored variables and levels, the truth on the forecast's grid."""
    # Lazy without dask: a dask task per (init, lead, member) chunk costs more than reading it.
    forecast = _member_dim(open_input(forecast_path, "forecast", lambda p: xr.open_zarr(p, chunks=None)), forecast_path)
    truth = open_input(truth_path, "truth", open_store)
    fields = sorted(str(v) for v in forecast.data_vars if LEAD in forecast[v].dims)
    if not fields:  # a truth or other store given as the forecast (found by tests/test_cli_fuzz.py)
        raise DataError(f"forecast {forecast_path} has no variable with a {LEAD} dimension: not a forecast store")
    variables = list(variables) if variables else fields
    _check_variables(forecast[fields], variables, "forecast", forecast_path)
    _check_dims(forecast, variables, (TIME, LEAD, MEMBER, LEVEL, *GRID), "forecast", forecast_path)
    if any(LEVEL in forecast[v].dims for v in variables):
        if levels is not None:
            forecast = _at_levels(forecast, [float(v) for v in levels], "forecast", forecast_path)
        levels = [float(v) for v in forecast[LEVEL].values]
    else:
        levels = None
    truth = on_forecast(truth, forecast, variables, "truth", truth_path)
    forecast, note = _completed(forecast, forecast_path, partial)
    _check_times(forecast, truth, truth_path)
    return Inputs(forecast[variables].astype(np.float64), truth, variables, levels, note)
