"""Ingest at scale: many ERA5 GRIB/netCDF files (a month each, pressure and single levels) into one store.

Files are first scanned for their time range (GRIB message headers only, no values decoded); files whose
ranges overlap (a month's pressure-level and single-level files) form one batch, and batches go to the store
in time order. Files are decoded in parallel worker processes, a few batches ahead of the writer, so memory
holds at most about ``workers + 1`` batches. A new store grows in a hidden sibling ``.OUT.partial`` and
appears by one rename when complete; a rerun resumes after the last complete batch (an existing store is
extended in place the same way). Each file is converted exactly as ``aeris-ds ingest`` converts it.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import xarray as xr
from tqdm import tqdm

from aeris_ds.data import schema
from aeris_ds.data.ingest import _GRIB_SUFFIXES, KIND, convert
from aeris_ds.data.rechunk import write_slab
from aeris_ds.errors import DataError
from aeris_ds.outputs import check_output, mark

DONE_ATTR = "ingest_done_times"  # times of the store written completely (a killed append may leave more)


def time_range(path: Path) -> tuple[np.datetime64, np.datetime64]:
    """First and last valid time of a file, from GRIB headers or the netCDF time coordinate."""
    if path.suffix.lower() in _GRIB_SUFFIXES:
        import eccodes

        times = []
        with open(path, "rb") as f:
            while (msg := eccodes.codes_grib_new_from_file(f, headers_only=True)) is not None:
                try:
                    date, hhmm = eccodes.codes_get(msg, "validityDate"), eccodes.codes_get(msg, "validityTime")
                finally:
                    eccodes.codes_release(msg)
                times.append(np.datetime64(f"{date // 10000:04d}-{date // 100 % 100:02d}-{date % 100:02d}T"
                                           f"{hhmm // 100:02d}:{hhmm % 100:02d}"))
    else:
        with xr.open_dataset(path) as ds:
            name = "valid_time" if "valid_time" in ds.coords else "time"
            times = list(np.atleast_1d(ds[name].values))
    if not times:
        raise ValueError(f"{path} holds no fields")
    return (np.datetime64(min(times), "ns"), np.datetime64(max(times), "ns"))


def batches(ranges: dict[Path, tuple[np.datetime64, np.datetime64]]) -> list[list[Path]]:
    """Files grouped so that batches are disjoint in time and sorted; files that overlap share a batch."""
    out: list[list[Path]] = []
    end = None
    for path, (first, last) in sorted(ranges.items(), key=lambda kv: (kv[1][0], str(kv[0]))):
        if end is not None and first <= end:
            out[-1].append(path)
            end = max(end, last)
        else:
            out.append([path])
            end = last
    return out


def _decode(paths: list[Path], member: int | None, drop_poles: bool) -> xr.Dataset:
    """One batch in the schema, in memory (runs in a worker process)."""
    return convert(paths, member=member, drop_poles=drop_poles).load()


def ingest_many(paths: Iterable[str | os.PathLike], out: str | os.PathLike, *, member: int | None = None,
                drop_poles: bool = False, workers: int | None = None, progress: bool = True) -> Path:
    """Streams ``paths`` into the store ``out`` (created, or extended in time); returns ``out``."""
    paths, out = [Path(p) for p in paths], Path(out)
    workers = workers or min(len(paths), os.cpu_count() or 1)
    extend = check_output(out, KIND, inputs=paths, resumable=True)  # new, or an ingested store to extend
    target = out if extend else out.with_name(f".{out.name}.partial")
    done, last = 0, None
    if target.exists():
        have = schema.open_store(target)
        done = int(have.attrs.get(DONE_ATTR, have.sizes["time"]))
        last = have["time"].values[done - 1] if done else None
    ctx = multiprocessing.get_context("spawn")  # workers must not inherit threads (JAX, OpenMP) of the parent
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        ranges = dict(zip(paths, pool.map(time_range, paths), strict=True))
        todo = [b for b in batches(ranges) if last is None or max(ranges[p][1] for p in b) > last]
        pending: deque = deque()
        bar = tqdm(total=sum(p.stat().st_size for b in todo for p in b) / 2**20, unit="MB", desc="ingest",
                   disable=not progress)
        for batch in todo:
            pending.append((batch, pool.submit(_decode, batch, member, drop_poles)))
            while len(pending) > workers or (pending and batch is todo[-1]):
                done, last = _append(target, pending, done, last, bar)
        bar.close()
    if not target.exists():
        raise DataError(f"no fields in {len(paths)} file(s) for {out}")
    if target != out:
        mark(target, KIND)
        os.replace(target, out)
    return out


def _append(target: Path, pending: deque, done: int, last, bar: tqdm) -> tuple[int, np.datetime64]:
    """Writes the oldest decoded batch after the store's last complete time."""
    batch, future = pending.popleft()
    ds = future.result()
    if last is not None:
        ds = ds.sel(time=ds["time"] > last)
    if ds.sizes["time"]:
        schema.validate_store(ds, list(ds.data_vars))
        write_slab(ds, target, done, None)
        done += ds.sizes["time"]
        last = ds["time"].values[-1]
        schema.update_attrs(target, {DONE_ATTR: done})
    bar.update(sum(p.stat().st_size for p in batch) / 2**20)
    return done, last
