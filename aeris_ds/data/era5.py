"""ERA5 GRIB/netCDF as downloaded from the Copernicus CDS → the WeatherBench2 schema, in memory.

GRIB is read with cfgrib (eccodes from the ``eccodeslib`` wheel). netCDF-4 files (what the CDS
delivers) need ``h5netcdf`` or ``netCDF4`` installed; netCDF-3 files are read by scipy.
ECMWF short names become WB2 names, levels become int hPa, latitude ascending, longitude in
[0, 360). Ensemble files keep a ``number`` dim (time, number, ...) unless one member is selected.
A GRIB file with a truncated or undecodable message, or whose messages do not fill whole hypercubes, is
refused. ``aeris-ds ingest`` (data/ingest.py) writes the result to a store.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import numpy as np
import xarray as xr

from aeris_ds.data import schema
from aeris_ds.errors import DataError, MissingPathError

T = TypeVar("T")

# ECMWF short name -> WB2 name. ``z`` without a level dim is the surface geopotential (orography).
SHORT_NAMES = {
    "z": "geopotential",
    "t": "temperature",
    "u": "u_component_of_wind",
    "v": "v_component_of_wind",
    "q": "specific_humidity",
    "t2m": "2m_temperature",
    "u10": "10m_u_component_of_wind",
    "v10": "10m_v_component_of_wind",
    "msl": "mean_sea_level_pressure",
    "sst": "sea_surface_temperature",
    "sp": "surface_pressure",
    "lsm": "land_sea_mask",
}
_LEVEL_NAMES = ("isobaricInhPa", "pressure_level", "plev", "level")
_GRIB_SUFFIXES = {".grib", ".grb", ".grib1", ".grib2", ".grb2"}


def _is_grib(path: Path) -> bool:
    if path.suffix.lower() in _GRIB_SUFFIXES:
        return True
    with open(path, "rb") as f:
        return f.read(4) == b"GRIB"


def _each_message(path: Path, read: Callable[[int], T], headers_only: bool = False) -> list[T]:
    """``read(handle)`` of every GRIB message: a truncated or undecodable one, or none, is a ``DataError``."""
    import eccodes

    out: list[T] = []
    with open(path, "rb") as f:
        while True:
            try:
                gid = eccodes.codes_grib_new_from_file(f, headers_only=headers_only)
                if gid is None:
                    break
                try:
                    out.append(read(gid))
                finally:
                    eccodes.codes_release(gid)
            except eccodes.CodesInternalError as err:
                raise DataError(f"{path}: GRIB message {len(out) + 1} is truncated or unreadable ({err}); "
                                "nothing of it was written (download the file again)") from err
    if not out:
        raise DataError(f"{path} holds no GRIB message (empty, or not a GRIB file)")
    return out


def _grib_messages(path: Path) -> int:
    """Number of GRIB messages, each decoded once."""
    import eccodes

    return len(_each_message(path, lambda gid: eccodes.codes_get_values(gid).size))


def _validity_time(gid: int) -> np.datetime64:
    import eccodes

    date, hhmm = eccodes.codes_get(gid, "validityDate"), eccodes.codes_get(gid, "validityTime")
    return np.datetime64(f"{date // 10000:04d}-{date // 100 % 100:02d}-{date % 100:02d}T"
                         f"{hhmm // 100:02d}:{hhmm % 100:02d}")


def _fields(ds: xr.Dataset) -> int:
    """2-D fields in an opened hypercube: what cfgrib made of the messages."""
    return sum(var.size // (var.sizes["latitude"] * var.sizes["longitude"]) for var in ds.data_vars.values())


def check_input(path: Path) -> None:
    """A named error for an input that is missing, a directory or empty."""
    if not path.exists():
        raise MissingPathError(f"input file {path} does not exist")
    if path.is_dir() or path.stat().st_size == 0:
        raise DataError(f"input {path} is {'a directory' if path.is_dir() else 'empty'}, not a GRIB or netCDF file")


def _open_netcdf(path: Path) -> xr.Dataset:
    try:
        return xr.open_dataset(path)
    except (ValueError, OSError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"cannot open {path}: not a GRIB or netCDF file xarray can read (netCDF-4 needs "
                        f"h5netcdf or netCDF4 installed): {first}") from err


def _open(path: Path) -> list[xr.Dataset]:
    check_input(path)
    if _is_grib(path):
        import cfgrib

        messages = _grib_messages(path)
        # One dataset per hypercube (pressure levels and surface fields cannot share one);
        # indexpath="" keeps cfgrib from writing .idx files next to (possibly read-only) inputs.
        parts = cfgrib.open_datasets(str(path), backend_kwargs={"indexpath": ""})
        fields = sum(_fields(ds) for ds in parts)
        if fields != messages:  # cfgrib drops messages it cannot place, and fills holes with NaN
            raise DataError(f"{path}: {messages} GRIB messages make {fields} fields (a time, member or level "
                            "missing or repeated); nothing of it was written")
        return parts
    return [_open_netcdf(path)]


def _to_schema(ds: xr.Dataset, *, member: int | None, drop_poles: bool) -> xr.Dataset:
    """Renames, reorients and unit-checks one opened hypercube."""
    # Time: analyses have step 0, so valid_time is the time; CDS netCDF has valid_time as the dim.
    if "valid_time" in ds.coords:
        if "valid_time" not in ds.dims:
            if "time" in ds.dims:
                ds = ds.swap_dims({"time": "valid_time"})
            else:
                ds = ds.expand_dims("valid_time")
        ds = ds.drop_vars([c for c in ("time",) if c in ds.coords]).rename({"valid_time": "time"})
    if "step" in ds.dims:
        raise ValueError("forecast files (a 'step' dimension) are not supported; ingest analyses")
    for name in _LEVEL_NAMES:
        if name in ds.dims and name != "level":
            ds = ds.rename({name: "level"})
    if "number" in ds.dims:
        if member is not None:
            if member not in ds["number"].values:
                raise ValueError(f"member {member} not in the file's members {ds['number'].values.tolist()}")
            ds = ds.sel(number=member)
    elif member is not None and "number" in ds.coords and int(ds["number"]) != member:
        raise ValueError(f"member {member} requested but the file holds member {int(ds['number'])}")
    scalars = [c for c in ds.coords if c not in ds.dims]
    ds = ds.drop_vars(scalars)
    if "level" in ds.dims:
        ds = ds.assign_coords(level=ds["level"].values.astype(np.int64)).sortby("level")
    lon = ds["longitude"].values % 360.0
    ds = ds.assign_coords(longitude=lon).sortby("longitude").sortby("latitude")
    if drop_poles:
        ds = ds.sel(latitude=ds["latitude"][np.abs(ds["latitude"].values) < 90.0])

    out = {}
    for short, var in ds.data_vars.items():
        if short not in SHORT_NAMES:
            continue
        name = SHORT_NAMES[short]
        if short == "z" and "level" not in var.dims:
            name = "geopotential_at_surface"
        if name in schema.STATIC and "time" in var.dims:
            var = var.isel(time=0, drop=True)  # CDS delivers statics with a time axis
        units = var.attrs.get("units")
        if not schema.units_match(name, units):
            raise ValueError(f"variable {short!r} ({name}) has units {units!r}, expected "
                             f"{schema.UNITS[name]!r}")
        want = schema.expected_dims(name)
        if "number" in var.dims:
            want = (want[0], "number", *want[1:])
        var = var.transpose(*want).astype(np.float32)
        var.attrs = {"units": schema.UNITS[name], "long_name": var.attrs.get("long_name", name)}
        out[name] = var
    if not out:
        raise ValueError(f"no known ERA5 variables; found {sorted(map(str, ds.data_vars))}, "
                         f"known short names {sorted(SHORT_NAMES)}")
    return xr.Dataset(out)


def convert(paths: Iterable[str | os.PathLike], *, member: int | None = None,
            drop_poles: bool = False) -> xr.Dataset:
    """Opens ERA5 GRIB/netCDF files and returns one dataset in the WB2 schema, sorted by time."""
    parts = [
        _to_schema(ds, member=member, drop_poles=drop_poles)
        for path in paths for ds in _open(Path(path))
    ]
    ds = xr.merge(parts, join="outer", compat="no_conflicts", combine_attrs="override")
    if "time" in ds.dims:
        ds = ds.sortby("time")
        _, first = np.unique(ds["time"].values, return_index=True)
        ds = ds.isel(time=np.sort(first))
    ds.attrs = {"source": "ERA5 (Copernicus CDS), converted by aeris-ds ingest"}
    return ds


def time_range(path: Path) -> tuple[np.datetime64, np.datetime64]:
    """First and last valid time of a file, from GRIB headers or the netCDF time coordinate."""
    check_input(path)
    if _is_grib(path):
        times = _each_message(path, _validity_time, headers_only=True)
    else:
        with _open_netcdf(path) as ds:
            name = "valid_time" if "valid_time" in ds.coords else "time"
            times = list(np.atleast_1d(ds[name].values))
        if not times:
            raise DataError(f"{path} holds no times")
    return (np.datetime64(min(times), "ns"), np.datetime64(max(times), "ns"))
