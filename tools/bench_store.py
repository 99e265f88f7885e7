"""Store read benchmark: a plain xarray read of a store's time-dependent variables against reading the same
bytes from one uncompressed .npy file, measured in the same run.

The store is read the way users and WeatherBench2 tools read stores:
``xr.open_zarr(store)[vars].isel(time=slice(0, T)).load()`` (dask, one task per inner chunk). With
``--legacy-times`` the first few of its times are also rewritten, under a temporary folder, in the former
layout (one time × 8×16 points per zstd inner chunk) and read the same way. Target: ratio ≥ 0.2.

    python tools/bench_store.py --store data/heldsuarez.zarr [--times 1460] [--repeats 5] [--legacy-times 40]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from aeris_ds.data import schema

# The former inner chunk: one time, all levels, 8×16 points (zarr's default zstd).
LEGACY = {"time": 1, "latitude": 8, "longitude": 16}


def _timed_vars(ds: xr.Dataset) -> list[str]:
    return [str(v) for v in ds.data_vars if "time" in ds[v].dims]


def xarray_read(path: Path, n_times: int) -> float:
    """Seconds for the plain xarray read (dask chunks = the store's inner chunks)."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Failed to open Zarr store with consolidated")
        ds = xr.open_zarr(path)
        ds[_timed_vars(ds)].isel(time=slice(0, n_times)).load()
    return time.perf_counter() - start


def npy_read(path: Path) -> float:
    start = time.perf_counter()
    np.load(path)
    return time.perf_counter() - start


def measure(store: Path, npy: Path, n_times: int, repeats: int) -> tuple[float, float]:
    """Best of ``repeats`` alternating reads: (xarray seconds, npy seconds). Both files are in the page cache
    after the first round, so this compares the readers, not the disk."""
    xs, ns = [], []
    for _ in range(repeats + 1):
        xs.append(xarray_read(store, n_times))
        ns.append(npy_read(npy))
    return min(xs[1:]), min(ns[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", type=Path, required=True)
    p.add_argument("--times", type=int, default=1460, help="times to read (a year is 1460)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--legacy-times", type=int, default=0,
                   help="also time the former layout (1 time × 8×16 points per inner chunk) on this many times")
    a = p.parse_args()
    src = schema.open_store(a.store)
    n = min(a.times, src.sizes["time"])
    data = src.isel(time=slice(0, n)).load()
    print(f"{a.store}: {n} times of {', '.join(_timed_vars(data))}")
    print(f"{'layout':<16}{'times':>6}{'MB':>8}{'inner chunk':>24}{'xarray MB/s':>13}{'npy MB/s':>10}{'ratio':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        stores = [("this store", a.store, n)]
        if a.legacy_times:
            m = min(a.legacy_times, n)
            legacy = {name: {"chunks": tuple(min(LEGACY.get(d, s), s) for d, s in var.sizes.items()),
                             "shards": var.shape} for name, var in data.data_vars.items() if "time" in var.dims}
            legacy_path = Path(tmp) / "legacy.zarr"
            data.isel(time=slice(0, m)).drop_encoding().to_zarr(legacy_path, zarr_format=3, consolidated=False,
                                                                 encoding=legacy)
            stores.append(("legacy 1×8×16", legacy_path, m))
        for label, path, times in stores:
            part = data.isel(time=slice(0, times))
            npy = Path(tmp) / "same_bytes.npy"
            values = [part[v].values.ravel() for v in _timed_vars(part)]
            np.save(npy, np.concatenate(values))
            nbytes = sum(v.nbytes for v in values)
            t_xr, t_np = measure(path, npy, times, a.repeats)
            chunk = "×".join(map(str, schema.open_store(path)[_timed_vars(part)[0]].encoding["chunks"]))
            print(f"{label:<16}{times:>6}{nbytes / 1e6:>8.1f}{chunk:>24}{nbytes / t_xr / 1e6:>13.1f}"
                  f"{nbytes / t_np / 1e6:>10.1f}{t_np / t_xr:>7.3f}")

if __name__ == "__main__":
    main()
