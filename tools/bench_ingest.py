"""Ingest throughput: `aeris-ds ingest --workers N` of many GRIB files against cfgrib alone decoding the same
files (one process, every field loaded), as MB/s of GRIB read, measured in the same run.

    python tools/bench_ingest.py [--files 12] [--workers 2] [--grib PATH]

The files are the real ERA5 sample `era5-levels-members.grib` (cfgrib's sdist; 10 members, z/t at 500/850 hPa,
4 times) repeated with dates moved on by two days per file, so together they are one time series.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

DEFAULT = Path.home() / ".cache" / "aeris-ds-tests" / "era5-levels-members.grib"


def shifted_copies(src: Path, out: Path, n: int) -> list[Path]:
    """``n`` copies of ``src`` whose dates move on by 2 days per copy (GRIB keys rewritten with eccodes)."""
    import eccodes
    import numpy as np

    paths = []
    for k in range(n):
        path = out / f"era5_{k:03d}.grib"
        with open(src, "rb") as f, open(path, "wb") as g:
            while (msg := eccodes.codes_grib_new_from_file(f)) is not None:
                date = eccodes.codes_get(msg, "dataDate")
                day = np.datetime64(f"{date // 10000:04d}-{date // 100 % 100:02d}-{date % 100:02d}") + 2 * k
                eccodes.codes_set(msg, "dataDate", int(str(day).replace("-", "")))
                g.write(eccodes.codes_get_message(msg))
                eccodes.codes_release(msg)
        paths.append(path)
    return paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=12)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--grib", type=Path, default=DEFAULT)
    a = p.parse_args()
    import cfgrib

    from aeris_ds.data.ingest import ingest

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = shifted_copies(a.grib, tmp, a.files)
        mb = sum(f.stat().st_size for f in files) / 2**20
        tick = time.perf_counter()
        for f in files:
            for ds in cfgrib.open_datasets(str(f), backend_kwargs={"indexpath": ""}):
                ds.load()
        alone = time.perf_counter() - tick
        tick = time.perf_counter()
        ingest(files, tmp / "era5.zarr", workers=a.workers)
        ours = time.perf_counter() - tick
    print(f"{a.files} GRIB files, {mb:.1f} MB")
    print(f"cfgrib alone (1 process)         {mb / alone:7.2f} MB/s  ({alone:.1f} s)")
    print(f"aeris-ds ingest --workers {a.workers}      {mb / ours:7.2f} MB/s  ({ours:.1f} s)  "
          f"ratio {alone / ours:.2f}")


if __name__ == "__main__":
    main()
