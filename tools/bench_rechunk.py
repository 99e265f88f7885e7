"""Rechunk throughput: `aeris-ds rechunk` of a WeatherBench2-layout store (zarr v2, whole-globe chunks of one
time) against a plain xarray read of the same store and a write_store of it from memory, measured in the same run,
as MB/s of decoded float32.

    python tools/bench_rechunk.py [--lat 121 --lon 240 --levels 13 --times 24] [--config]

The store is written to a temporary folder from the synthetic travelling-wave fields (WB2 names, both poles).
With ``--config``, the rewrite uses a 120×240 config (crop, 8×8 window-sized inner chunks).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from aeris_ds.config import load_config
from aeris_ds.data.rechunk import rechunk
from aeris_ds.data.schema import open_store, write_store
from aeris_ds.data.synthetic import synthetic_dataset

LEVELS13 = (50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lat", type=int, default=121)
    p.add_argument("--lon", type=int, default=240)
    p.add_argument("--levels", type=int, default=13)
    p.add_argument("--times", type=int, default=24)
    p.add_argument("--memory-mb", type=float, default=256)
    p.add_argument("--config", action="store_true", help="rechunk with a cropping, window-chunked config")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lat = np.linspace(90, -90, a.lat)
        lon = np.arange(a.lon) * 360.0 / a.lon
        ds = synthetic_dataset(lat, lon, days=a.times / 4, levels=LEVELS13[: a.levels])
        ds.attrs = {}
        enc = {n: {"chunks": (1, *v.shape[1:]) if "time" in v.dims else v.shape} for n, v in ds.data_vars.items()}
        src = tmp / "wb2.zarr"
        ds.to_zarr(src, zarr_format=2, consolidated=True, encoding=enc)
        mb = sum(v.nbytes for v in ds.data_vars.values()) / 2**20
        tick = time.perf_counter()
        loaded = open_store(src).load()
        read_s = time.perf_counter() - tick
        tick = time.perf_counter()
        write_store(loaded.sortby("latitude"), tmp / "direct.zarr")
        write_s = time.perf_counter() - tick
        cfg = None
        if a.config:
            rows = a.lat - a.lat % 8
            cfg = load_config("small", {"grid": {"lat": rows, "lon": a.lon},
                                        "data": {"grid_adapt": "crop", "levels": list(LEVELS13[: a.levels])}})
        tick = time.perf_counter()
        rechunk(src, tmp / "ours.zarr", cfg, memory_mb=a.memory_mb, progress=False)
        rechunk_s = time.perf_counter() - tick
        print(f"store {a.times} times × {a.lat}×{a.lon}, {a.levels} levels: {mb:.0f} MB of float32")
        print(f"xarray read     {mb / read_s:8.1f} MB/s  ({read_s:.2f} s)")
        print(f"write_store     {mb / write_s:8.1f} MB/s  ({write_s:.2f} s)  (our layout, from memory)")
        print(f"aeris-ds rechunk{mb / rechunk_s:8.1f} MB/s  ({rechunk_s:.2f} s)  ratio {read_s / rechunk_s:.2f} "
              f"of the read ({'config, crop, 8×8 chunks' if cfg else 'all variables, default chunks'})")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
