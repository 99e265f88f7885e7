"""WeatherBench2 ERA5 schema: names, dims, units, validation, and sharded zarr v3 writing.

Every store the training reader sees (real ERA5 ingested by ``ingest``, the embedded Held–Suarez
dataset) follows this schema, so one reader serves both. Stores are written as zarr v3 with
sharding: an inner chunk is a block of times × all levels × a 32×32 lat/lon block (whole windows of
8, 16 or 32 points), so a rank reading only its spatial block touches only the inner chunks it needs.
On a small grid a time block of many times makes chunks of a few MiB, which keep a plain
``xr.open_zarr`` read (one dask task per inner chunk) within a few times the rate of reading a .npy file
(tools/bench_store.py); on a big grid it is one time, so that a read of one sample fetches no more times
than it uses. A shard (time blocks × the whole field) keeps the file count small.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from aeris_ds.outputs import writing

ATMOSPHERIC = ("geopotential", "temperature", "u_component_of_wind", "v_component_of_wind",
               "specific_humidity")
SURFACE = ("2m_temperature", "10m_u_component_of_wind", "10m_v_component_of_wind",
           "mean_sea_level_pressure", "sea_surface_temperature", "surface_pressure")
STATIC = ("geopotential_at_surface", "land_sea_mask")

ATMOSPHERIC_DIMS = ("time", "level", "latitude", "longitude")
SURFACE_DIMS = ("time", "latitude", "longitude")
STATIC_DIMS = ("latitude", "longitude")
# Ensemble stores (e.g. ERA5 EDA members) carry a member dimension right after time.
ENSEMBLE_DIM = "number"

# Units as WeatherBench2 / ERA5 (CF-style strings as ECMWF writes them).
UNITS = {
    "geopotential": "m**2 s**-2",
    "temperature": "K",
    "u_component_of_wind": "m s**-1",
    "v_component_of_wind": "m s**-1",
    "specific_humidity": "kg kg**-1",
    "2m_temperature": "K",
    "10m_u_component_of_wind": "m s**-1",
    "10m_v_component_of_wind": "m s**-1",
    "mean_sea_level_pressure": "Pa",
    "sea_surface_temperature": "K",
    "surface_pressure": "Pa",
    "geopotential_at_surface": "m**2 s**-2",
    "land_sea_mask": "1",
}

# Spellings of the same unit found in CDS GRIB/netCDF files and other CF writers.
_UNIT_ALIASES = {
    "m**2 s**-2": {"m**2 s**-2", "m2 s-2", "m^2 s^-2", "m^2/s^2", "m2/s2", "m**2/s**2"},
    "K": {"K", "kelvin", "degK"},
    "m s**-1": {"m s**-1", "m s-1", "m/s", "m s^-1"},
    "kg kg**-1": {"kg kg**-1", "kg kg-1", "kg/kg", "1", ""},
    "Pa": {"Pa", "pascal"},
    "1": {"1", "(0 - 1)", "0-1", "", "dimensionless", "~"},
}

_DEFAULT_INNER_CHUNKS = {"latitude": 32, "longitude": 32}
_BLOCK_TARGET_BYTES = 8 * 2**20  # a time block of one whole field of the largest variable
_SHARD_TARGET_BYTES = 64 * 2**20
# A crc32c of every inner chunk: a damaged byte fails the read instead of decoding to finite garbage. No
# zstd: it saved ~11 % of the embedded data's bytes and halved the read rate.
CHUNK_COMPRESSORS = (zarr.codecs.Crc32cCodec(),)


def expected_dims(name: str) -> tuple[str, ...]:
    """Dims of a schema variable (without the optional ensemble dim)."""
    if name in ATMOSPHERIC:
        return ATMOSPHERIC_DIMS
    if name in SURFACE:
        return SURFACE_DIMS
    if name in STATIC:
        return STATIC_DIMS
    raise ValueError(f"{name!r} is not a WeatherBench2 schema variable; known: {sorted(UNITS)}")


def units_match(name: str, units: str | None) -> bool:
    """True when ``units`` is a spelling of the schema unit of ``name``."""
    canonical = UNITS[name]
    return (units or "").strip() in _UNIT_ALIASES.get(canonical, {canonical})


def _dims_ok(name: str, dims: tuple[str, ...]) -> bool:
    want = expected_dims(name)
    if dims == want:
        return True
    # Ensemble member dim directly after time.
    return want[0] == "time" and dims == (want[0], ENSEMBLE_DIM, *want[1:])


def validate_store(ds: xr.Dataset, variables: Iterable[str], levels: Iterable[int] = ()) -> None:
    """Raises ``ValueError`` naming the culprit unless ``ds`` follows the schema.

    Checks: every variable present with the schema dims, every requested pressure level present,
    latitude ascending within [-90, 90], longitude ascending within [0, 360), time strictly
    increasing with a constant step (gaps are reported with the times on both sides).
    """
    variables = list(variables)
    missing = [v for v in variables if v not in ds.data_vars]
    if missing:
        raise ValueError(f"missing variable(s) {missing}; the store has {sorted(map(str, ds.data_vars))}")
    for name in variables:
        dims = tuple(map(str, ds[name].dims))
        if not _dims_ok(name, dims):
            raise ValueError(f"variable {name!r} has dims {dims}, expected {expected_dims(name)}")
    levels = [int(lv) for lv in levels]
    if levels:
        if "level" not in ds.coords:
            raise ValueError(f"levels {levels} requested but the store has no 'level' coordinate")
        have = {int(lv) for lv in ds["level"].values}
        absent = [lv for lv in levels if lv not in have]
        if absent:
            raise ValueError(f"missing level(s) {absent} hPa; the store has {sorted(have)}")
    lat = ds["latitude"].values
    if lat.size > 1 and not np.all(np.diff(lat) > 0):
        raise ValueError(f"latitude must be strictly ascending (-90 -> 90); got {lat[:3]}...{lat[-3:]}")
    if lat.size and (lat.min() < -90 or lat.max() > 90):
        raise ValueError(f"latitude outside [-90, 90]: {lat.min()}..{lat.max()}")
    lon = ds["longitude"].values
    if lon.size > 1 and not np.all(np.diff(lon) > 0):
        raise ValueError(f"longitude must be strictly ascending; got {lon[:3]}...{lon[-3:]}")
    if lon.size and (lon.min() < 0 or lon.max() >= 360):
        raise ValueError(f"longitude must lie in [0, 360); got {lon.min()}..{lon.max()}")
    if "time" in ds.dims:
        _validate_time(ds["time"].values)


def _validate_time(times: np.ndarray) -> None:
    if not np.issubdtype(times.dtype, np.datetime64):
        raise ValueError(f"time must be datetime64, got {times.dtype}")
    if times.size < 2:
        return
    steps = np.diff(times)
    bad = np.flatnonzero(steps <= np.timedelta64(0))
    if bad.size:
        i = bad[0]
        raise ValueError(f"time not strictly increasing: {times[i]} is followed by {times[i + 1]}")
    step = np.min(steps)
    gaps = np.flatnonzero(steps != step)
    if gaps.size:
        shown = ", ".join(f"{times[i]} -> {times[i + 1]}" for i in gaps[:5])
        more = f" (and {gaps.size - 5} more)" if gaps.size > 5 else ""
        raise ValueError(f"time gap(s) in a {step.astype('timedelta64[h]')} series: {shown}{more}")


def _time_blocks(ds: xr.Dataset, inner_chunks: Mapping[str, int], times_per_shard: int | None) -> tuple[int, int]:
    """(times per inner chunk, times per shard), the same for every variable so time blocks line up.

    A read of one time fetches its whole time block, so the block spans as many times as keep one whole
    field of the largest variable within ~8 MiB (or ``inner_chunks["time"]``): inner chunks of a few MiB on
    a small grid (the embedded 32×64 one), one time on a big one (0.25°: 54 MB a time), where a sample
    read would otherwise fetch a hundred times more than it uses. A shard is a whole number of blocks
    (``times_per_shard`` when given).
    """
    timed = [v for v in ds.data_vars.values() if "time" in v.dims]
    if not timed:
        return 1, 1
    n_time = ds.sizes["time"]
    field_bytes = max(v.dtype.itemsize * v.size // n_time for v in timed)  # one time, whole field
    t_chunk = int(inner_chunks.get("time", 0)) or max(1, _BLOCK_TARGET_BYTES // field_bytes)
    if times_per_shard:
        # The largest divisor of the shard not above the target.
        t_chunk = max(d for d in range(1, min(t_chunk, times_per_shard) + 1) if times_per_shard % d == 0)
        return t_chunk, times_per_shard
    t_chunk = min(t_chunk, n_time)
    return t_chunk, t_chunk * max(1, min(_SHARD_TARGET_BYTES // field_bytes, n_time) // t_chunk)


def _encoding(ds: xr.Dataset, inner_chunks: Mapping[str, int], times_per_shard: int | None) -> dict:
    """Inner chunk = (time block, all levels/members, lat/lon block); shard = time blocks × whole field."""
    t_chunk, t_shard = _time_blocks(ds, inner_chunks, times_per_shard)
    enc: dict[str, dict] = {}
    for name, var in ds.data_vars.items():
        chunks, shards = [], []
        for dim, size in zip(var.dims, var.shape, strict=True):
            if dim == "time":
                chunks.append(t_chunk)
                shards.append(t_shard)
            elif dim in inner_chunks:
                c = max(1, min(int(inner_chunks[dim]), size))
                chunks.append(c)
                shards.append(c * math.ceil(size / c))  # shard must be a multiple of the chunk
            else:
                chunks.append(size)
                shards.append(size)
        enc[str(name)] = {"chunks": tuple(chunks), "shards": tuple(shards), "compressors": CHUNK_COMPRESSORS}
    if "time" in ds.coords:
        # A fixed epoch so that appended times encode consistently.
        enc["time"] = {"units": "hours since 1970-01-01", "dtype": "int64"}
    return enc


def write_store(
    ds: xr.Dataset,
    path: str | os.PathLike,
    *,
    inner_chunks: Mapping[str, int] | None = None,
    times_per_shard: int | None = None,
    append: bool = False,
    kind: str | None = None,
) -> Path:
    """Writes ``ds`` as a sharded zarr v3 store at ``path``; never leaves a half-written new store.

    A new store is written beside ``path`` under a temporary name and renamed into place. With
    ``append=True`` and an existing store, ``ds`` is appended along time (its first time must follow
    the store's last one; chunking comes from the store). ``inner_chunks`` maps dims (``latitude``,
    ``longitude``, optionally ``time``) to inner chunk sizes; ``times_per_shard`` defaults to what
    fits ~64 MiB per shard of the largest variable. ``kind`` marks the store as that kind of output
    (:mod:`aeris_ds.outputs`); a new store then replaces an existing one of the same kind.
    """
    path = Path(path)
    inner = dict(_DEFAULT_INNER_CHUNKS if inner_chunks is None else inner_chunks)
    ds = ds.drop_encoding()
    if append and path.exists():
        existing = open_store(path)
        if existing["time"].size and ds["time"].size:
            last, first = existing["time"].values[-1], ds["time"].values[0]
            if first <= last:
                raise ValueError(f"cannot append: first new time {first} is not after the store's "
                                 f"last time {last}")
        static = [n for n in ds.data_vars if "time" not in ds[n].dims]
        ds = ds.drop_vars(static)
        ds.attrs = {**existing.attrs, **ds.attrs}  # xarray's append rewrites the group attrs
        ds.to_zarr(path, mode="a", append_dim="time", consolidated=False)
        return path
    if path.exists() and kind is None:
        raise FileExistsError(f"{path} exists; pass append=True to extend it along time")
    with writing(path, kind) as tmp:  # replaces an existing store only when it is the same kind of output
        ds.to_zarr(tmp, mode="w-", zarr_format=3, consolidated=False,
                   encoding=_encoding(ds, inner, times_per_shard))
    return path


def open_store(path: str | os.PathLike, **kwargs) -> xr.Dataset:
    """Opens a store lazily (zarr v3 as we write it, or a WeatherBench2 zarr v2 store).

    Default ``chunks=None``: lazy indexing without dask, so a block read fetches only its inner
    chunks; dask tasks per tiny inner chunk would make bulk loads ~5× slower.
    """
    kwargs.setdefault("chunks", None)
    with warnings.catch_warnings():
        # Our v3 stores are not consolidated (appends would have to re-consolidate); fine to open.
        warnings.filterwarnings("ignore", message="Failed to open Zarr store with consolidated")
        return xr.open_zarr(path, consolidated=None, **kwargs)


def update_attrs(path: str | os.PathLike, attrs: Mapping[str, object]) -> None:
    """Updates a store's global attributes in place (e.g. split bounds after an append)."""
    group = zarr.open_group(str(path), mode="r+")
    group.attrs.update(dict(attrs))
