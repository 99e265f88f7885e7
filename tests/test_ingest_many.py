"""Many files into one store: the real ERA5 GRIB sample cut into a file per (time, variable), decoded in parallel
and written in time order, equals the single-file ingest of the same data; an interrupted ingest resumes."""

from __future__ import annotations

import random

import pytest
import xarray as xr
import zarr

from aeris_ds.data import ingest
from aeris_ds.data.schema import open_store


def _split_grib(src, tmp) -> list:
    """One GRIB file per (date, time, variable), cut at message boundaries with eccodes."""
    import eccodes

    parts: dict[tuple, bytearray] = {}
    with open(src, "rb") as f:
        while (msg := eccodes.codes_grib_new_from_file(f)) is not None:
            key = tuple(eccodes.codes_get(msg, k) for k in ("dataDate", "dataTime", "shortName"))
            parts.setdefault(key, bytearray()).extend(eccodes.codes_get_message(msg))
            eccodes.codes_release(msg)
    paths = []
    for (date, hhmm, name), data in parts.items():
        path = tmp / f"era5_{name}_{date}_{hhmm:04d}.grib"
        path.write_bytes(bytes(data))
        paths.append(path)
    return paths


def test_many_files_equal_one_file_and_resume(era5_grib_path, tmp_path):
    files = _split_grib(era5_grib_path, tmp_path)
    assert len(files) == 8  # 4 times × (z, t)
    one = open_store(ingest.ingest([era5_grib_path], tmp_path / "one.zarr")).load()
    random.Random(0).shuffle(files)  # the order given does not matter: files are written in time order
    many = ingest.ingest(files, tmp_path / "many.zarr", workers=2)
    xr.testing.assert_equal(open_store(many).load().drop_attrs(), one.drop_attrs())
    assert not (tmp_path / ".many.zarr.partial").exists()
    # Interrupted after the first two times (what a killed run leaves: a partial store), then rerun with all.
    early = sorted(files, key=lambda p: p.name.split("_", 2)[2])[:4]
    ingest.ingest(early, tmp_path / "partial.zarr", workers=2)
    (tmp_path / "partial.zarr").rename(tmp_path / ".resumed.zarr.partial")
    resumed = ingest.ingest(files, tmp_path / "resumed.zarr", workers=2)
    xr.testing.assert_equal(open_store(resumed).load().drop_attrs(), one.drop_attrs())


@pytest.mark.parametrize("workers", [1, 2])
def test_overwrite_and_times_per_shard_whatever_the_workers(era5_grib_path, tmp_path, workers):
    files = _split_grib(era5_grib_path, tmp_path)
    out = ingest.ingest(files[:2], tmp_path / "era5.zarr", workers=workers)
    assert zarr.open_array(str(out / "temperature")).shards[0] == 1
    ingest.ingest(files, out, workers=workers, overwrite=True, times_per_shard=2)  # replaced, not extended
    assert zarr.open_array(str(out / "temperature")).shards[0] == 2
    one = open_store(ingest.ingest([era5_grib_path], tmp_path / "one.zarr")).load()
    xr.testing.assert_equal(open_store(out).load().drop_attrs(), one.drop_attrs())
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
