"""``aeris-ds ingest``: ERA5 GRIB/netCDF files (e.g. a month each, pressure and single levels) → one store.

Each file is converted by data/era5.py. Files are first scanned for their time range (GRIB message headers
only, no values decoded); files whose ranges overlap (a month's pressure-level and single-level files) form
one batch, and batches go to the store in time order. ``workers`` processes decode a few batches ahead of
the writer (one worker decodes in a thread beside it), so memory holds at most about ``workers + 1``
batches. A new store, or the replacement of an ingested one (``--overwrite``), grows in a hidden sibling
``.OUT.partial`` and appears by one rename when complete; a rerun resumes after its last complete batch.
An existing ingested store is extended in place the same way with the times it does not have yet.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import xarray as xr
from tqdm import tqdm

from aeris_ds.args import ArgumentParser, existing_path, non_negative_int, output_path, positive_int
from aeris_ds.data import schema
from aeris_ds.data.era5 import check_input, convert, time_range
from aeris_ds.data.rechunk import write_slab
from aeris_ds.errors import DataError
from aeris_ds.outputs import check_output, install, space_errors

KIND = "ingest"  # the output kind of an ingested store (aeris_ds.outputs)
DONE_ATTR = "ingest_done_times"  # times of the store written completely (a killed append may leave more)


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
    """One batch in the schema, in memory (runs in a worker)."""
    return convert(paths, member=member, drop_poles=drop_poles).load()


def _pool(workers: int) -> Executor:
    if workers == 1:
        return ThreadPoolExecutor(1)
    # Worker processes must not inherit threads (JAX, OpenMP) of the parent.
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def ingest(paths: Iterable[str | os.PathLike], out: str | os.PathLike, *, member: int | None = None,
           drop_poles: bool = False, times_per_shard: int | None = None, overwrite: bool = False,
           workers: int = 1, progress: bool = False) -> Path:
    """Streams ``paths`` into the store ``out``: created, replaced (``overwrite``) or extended in time.

    ``out`` must be new or a store written by ingest, and none of the inputs. ``times_per_shard`` applies to a
    store this call creates (an extended one keeps its layout). Returns ``out``.
    """
    paths, out = [Path(p) for p in paths], Path(out)
    for path in paths:
        check_input(path)
    extend = check_output(out, KIND, inputs=paths, overwrite=overwrite, resumable=True)
    target = out if extend else out.with_name(f".{out.name}.partial")
    done, last = 0, None
    if target.exists():
        have = schema.open_store(target)
        done = int(have.attrs.get(DONE_ATTR, have.sizes["time"]))
        last = have["time"].values[done - 1] if done else None
    # A full disk ends the batch being written: DONE_ATTR still counts the complete ones, where a rerun goes on.
    with space_errors(target, "it continues after the last complete batch"), _pool(workers) as pool:
        ranges = dict(zip(paths, pool.map(time_range, paths), strict=True))
        todo = [b for b in batches(ranges) if last is None or max(ranges[p][1] for p in b) > last]
        pending: deque = deque()
        size = sum(p.stat().st_size for b in todo for p in b) / 2**20
        # disable=None: a bar on a terminal only, so that an error stays one line in a log
        with tqdm(total=size, unit="MB", desc="ingest", disable=None if progress else True) as bar:
            for batch in todo:
                pending.append((batch, pool.submit(_decode, batch, member, drop_poles)))
                while len(pending) > workers or (pending and batch is todo[-1]):
                    done, last = _append(target, pending, done, last, times_per_shard, bar)
    if not target.exists():
        raise DataError(f"no fields in {len(paths)} file(s) for {out}")
    if target != out:
        install(target, out, KIND)
    return out


def _append(target: Path, pending: deque, done: int, last, times_per_shard: int | None,
            bar: tqdm) -> tuple[int, np.datetime64]:
    """Writes the oldest decoded batch after the store's last complete time."""
    batch, future = pending.popleft()
    ds = future.result()
    if last is not None:
        ds = ds.sel(time=ds["time"] > last)
    if ds.sizes["time"]:
        schema.validate_store(ds, list(ds.data_vars))
        write_slab(ds, target, done, None, times_per_shard)
        done += ds.sizes["time"]
        last = ds["time"].values[-1]
        schema.update_attrs(target, {DONE_ATTR: done})
    bar.update(sum(p.stat().st_size for p in batch) / 2**20)
    return done, last


def main(argv: list[str] | None = None) -> None:
    """``aeris-ds ingest FILE... --out STORE [--member N] [--drop-poles] [--workers N]``."""
    p = ArgumentParser(prog="aeris-ds ingest", description=__doc__.splitlines()[0])
    p.add_argument("inputs", nargs="+", type=existing_path, help="ERA5 GRIB (.grib/.grb) or netCDF (.nc) files")
    p.add_argument("--out", required=True, type=output_path,
                   help="zarr store to create, or an ingested store to extend")
    p.add_argument("--overwrite", action="store_true", help="replace an existing ingested store at --out")
    p.add_argument("--member", type=non_negative_int, default=None,
                   help="select one ensemble member (default: keep the 'number' dim)")
    p.add_argument("--drop-poles", action="store_true", help="drop the ±90° rows (AERIS uses 720×1440)")
    p.add_argument("--times-per-shard", type=positive_int, default=None, help="times per shard of a new store")
    p.add_argument("--workers", type=positive_int, default=1, help="processes decoding files ahead of the writer")
    a = p.parse_args(argv)
    print(ingest([Path(f) for f in a.inputs], Path(a.out), member=a.member, drop_poles=a.drop_poles,
                 times_per_shard=a.times_per_shard, overwrite=a.overwrite, workers=a.workers, progress=True))


if __name__ == "__main__":
    from aeris_ds.errors import run_command

    raise SystemExit(run_command(main))
