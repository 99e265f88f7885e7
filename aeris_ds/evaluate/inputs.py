"""The forecast and truth that ``aeris-ds evaluate`` scores, checked before anything is computed or written.

Checks, each a one-line ``DataError`` naming the store: variables and levels present in both; the same grid
(latitude/longitude values, not just an overlap; a truth whose grid holds the forecast's in another
orientation or with more rows, as the reader's ``data.grid_adapt`` sees it, is first put on the forecast's);
the member dimension named ``number``, ``member`` or ``realization`` (renamed to ``number``); no other
dimensions; a complete forecast, from its progress record ``completed_steps`` (or, when asked, only its
leading lead times that every member completed); every init and valid time present in the truth. Fields are
scored in float64 whatever the stores hold.
"""

from __future__ import annotations

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
    forecast: xr.Dataset  # lazy, float64, member dim ``number``, only the scored variables and lead times
    truth: xr.Dataset  # lazy, only the scored variables
    variables: list[str]
    levels: list[float] | None  # pressure levels to score; None when no variable has levels
    note: str = ""  # what was left out (an incomplete forecast scored with ``partial``)


def _open(path: str | Path, what: str, opener) -> xr.Dataset:
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
    for name in variables:
        extra = [d for d in ds[name].dims if d not in allowed]
        if extra:
            hint = f" (an ensemble dimension must be one of {MEMBER_NAMES})" if what == "forecast" else ""
            raise DataError(f"{what} {path}: variable {name} has unknown dimension(s) {extra}{hint}")
        missing = [d for d in allowed if d in (TIME, *GRID) and d not in ds[name].dims]
        if missing:
            raise DataError(f"{what} {path}: variable {name} lacks dimension(s) {missing}")


def _check_grid(forecast: xr.Dataset, truth: xr.Dataset, fc_path, truth_path) -> xr.Dataset:
    """Same latitude and longitude values; the forecast then takes the truth's exact coordinates."""
    for dim in GRID:
        f, t = forecast[dim].values.astype(np.float64), truth[dim].values.astype(np.float64)
        if f.shape != t.shape or not np.allclose(f, t, rtol=0, atol=GRID_ATOL):
            raise DataError(f"forecast {fc_path} and truth {truth_path} are on different grids: {dim} has "
                            f"{f.size} values {f[0]:g}..{f[-1]:g} in the forecast, {t.size} values "
                            f"{t[0]:g}..{t[-1]:g} in the truth; regrid one of them")
    return forecast.assign_coords({dim: truth[dim].values for dim in GRID})


def _check_levels(forecast: xr.Dataset, truth: xr.Dataset, levels: list[float] | None, fc_path, truth_path,
                  variables: list[str]) -> list[float] | None:
    if not any(LEVEL in forecast[v].dims for v in variables):
        return None
    have_fc = [float(v) for v in forecast[LEVEL].values]
    wanted = have_fc if levels is None else [float(v) for v in levels]
    absent = [v for v in wanted if v not in have_fc]
    if absent:
        raise DataError(f"forecast {fc_path} lacks level(s) {absent}; it has {have_fc}")
    have_truth = [float(v) for v in truth[LEVEL].values] if LEVEL in truth.coords else []
    absent = [v for v in wanted if v not in have_truth]
    if absent:
        raise DataError(f"truth {truth_path} lacks level(s) {absent} of the forecast; it has {have_truth}")
    return wanted


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
    """Open and check the forecast and truth stores (lazily: nothing is loaded but coordinates)."""
    # Lazy without dask: a dask task per (init, lead, member) chunk costs more than reading it.
    forecast = _member_dim(_open(forecast_path, "forecast", lambda p: xr.open_zarr(p, chunks=None)), forecast_path)
    truth = _open(truth_path, "truth", open_store)
    fields = sorted(str(v) for v in forecast.data_vars if LEAD in forecast[v].dims)
    variables = list(variables) if variables else fields
    for what, path, have in (("forecast", forecast_path, fields), ("truth", truth_path, list(truth.data_vars))):
        missing = [v for v in variables if v not in have]
        if missing:
            raise DataError(f"{what} {path} lacks variable(s) {missing}; it has {sorted(map(str, have))}")
    _check_dims(forecast, variables, (TIME, LEAD, MEMBER, LEVEL, *GRID), "forecast", forecast_path)
    _check_dims(truth, variables, (TIME, LEVEL, *GRID), "truth", truth_path)
    try:  # latitude reversed, longitude in [-180, 180), poles cropped: the reader's view of the truth
        truth = select_grid(truth, forecast["latitude"].values, forecast["longitude"].values)
    except KeyError:
        pass  # a grid that does not hold the forecast's: _check_grid names the difference
    forecast = _check_grid(forecast, truth, forecast_path, truth_path)
    levels = _check_levels(forecast, truth, levels, forecast_path, truth_path, variables)
    forecast, note = _completed(forecast, forecast_path, partial)
    _check_times(forecast, truth, truth_path)
    return Inputs(forecast[variables].astype(np.float64), truth[variables], variables, levels, note)
