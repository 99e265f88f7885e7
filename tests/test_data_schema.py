"""WB2 schema: sharded zarr v3 round trip, append, and validate_store error messages."""

import numpy as np
import pytest
import xarray as xr
import zarr

from aeris_ds.data import schema


def _dataset(n_time: int = 8, start: str = "2020-01-01T00") -> xr.Dataset:
    rng = np.random.default_rng(0)
    time = np.datetime64(start, "ns") + np.arange(n_time) * np.timedelta64(6, "h")
    lat, lon = np.linspace(-90, 90, 19), np.arange(0, 360, 10.0)
    return xr.Dataset(
        {
            "temperature": (schema.ATMOSPHERIC_DIMS, rng.standard_normal((n_time, 2, 19, 36), np.float32)),
            "2m_temperature": (schema.SURFACE_DIMS, rng.standard_normal((n_time, 19, 36), np.float32)),
            "land_sea_mask": (schema.STATIC_DIMS, rng.random((19, 36), np.float32)),
        },
        coords={"time": time, "level": np.array([500, 850]), "latitude": lat, "longitude": lon},
        attrs={"title": "test"},
    )


def test_data_schema_round_trip_chunks_and_shards(tmp_path):
    ds = _dataset()
    path = schema.write_store(ds, tmp_path / "s.zarr", times_per_shard=4)
    back = schema.open_store(path).load()
    xr.testing.assert_identical(back.drop_encoding(), ds)
    t = zarr.open_array(str(path / "temperature"))
    assert t.metadata.zarr_format == 3
    # A time block (all of the shard's 4 times fit the chunk target), all levels, a 32×32 lat/lon block.
    assert t.chunks == (4, 2, 19, 32)
    assert t.shards == (4, 2, 19, 64)  # the whole field, rounded up to whole chunks
    # A checksum, no compression: zstd's decoding cost more than the ~11 % it saved.
    assert [type(c) for c in t.compressors] == [zarr.codecs.Crc32cCodec]
    assert zarr.open_array(str(path / "land_sea_mask")).chunks == (19, 32)
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary store was renamed away


def test_data_schema_time_blocks_fit_the_target_and_divide_the_shard(monkeypatch):
    ds = _dataset(12)
    per_time = 4 * 2 * 19 * 36  # bytes of one time of temperature's whole field
    assert schema._time_blocks(ds, {"latitude": 32, "longitude": 32}, None) == (12, 12)
    monkeypatch.setattr(schema, "_BLOCK_TARGET_BYTES", 5 * per_time)
    assert schema._time_blocks(ds, {"latitude": 32, "longitude": 32}, None) == (5, 10)  # shards: whole blocks
    assert schema._time_blocks(ds, {"latitude": 32, "longitude": 32}, 12) == (4, 12)  # largest divisor ≤ 5
    assert schema._time_blocks(ds, {"time": 1, "latitude": 8, "longitude": 16}, 12) == (1, 12)


def _shaped(n_time: int, levels: int, n_lat: int, n_lon: int) -> xr.Dataset:
    """A dataset of the given shape without its memory (a broadcast zero): only sizes matter here."""
    zeros = np.broadcast_to(np.float32(0), (n_time, levels, n_lat, n_lon))
    return xr.Dataset({"temperature": (schema.ATMOSPHERIC_DIMS, zeros),
                       "2m_temperature": (schema.SURFACE_DIMS, zeros[:, 0])})


@pytest.mark.parametrize(("shape", "per_shard", "blocks"), [
    ((13, 721, 1440), None, (1, 1)),       # 0.25°: 54 MB a time, a sample read fetches one time per chunk
    ((13, 121, 240), None, (5, 40)),       # 1.5°: 1.5 MB a time → 5 times within 8 MiB
    ((3, 32, 64), None, (341, 2728)),      # the embedded grid: 24 KiB a time
    ((3, 32, 64), 480, (240, 480)),        # … as Held–Suarez writes it, a shard of 480 frames
])
def test_data_schema_time_block_follows_the_grid(shape, per_shard, blocks):
    ds = _shaped(4000, *shape)
    t_chunk, t_shard = schema._time_blocks(ds, schema._DEFAULT_INNER_CHUNKS, per_shard)
    assert (t_chunk, t_shard) == blocks
    field = 4 * shape[0] * shape[1] * shape[2]
    assert t_chunk == 1 or t_chunk * field <= schema._BLOCK_TARGET_BYTES  # a time block's whole field


def test_data_schema_old_layout_still_reads_and_appends(tmp_path):
    """Stores written before time blocks (1 time × 8×16 points per zstd inner chunk) read and extend as before."""
    ds = _dataset(8)
    old = tmp_path / "old.zarr"
    enc = {"temperature": {"chunks": (1, 2, 8, 16), "shards": (4, 2, 24, 48)},
           "2m_temperature": {"chunks": (1, 8, 16), "shards": (4, 24, 48)},
           "land_sea_mask": {"chunks": (8, 16), "shards": (24, 48)},
           "time": {"units": "hours since 1970-01-01", "dtype": "int64"}}
    ds.isel(time=slice(0, 6)).to_zarr(old, zarr_format=3, consolidated=False, encoding=enc)
    schema.write_store(ds.isel(time=slice(6, 8)), old, append=True)
    back = schema.open_store(old)
    assert back["temperature"].encoding["chunks"] == (1, 2, 8, 16)
    xr.testing.assert_identical(back.load().drop_encoding(), ds)


def test_data_schema_append_and_refuse_overwrite(tmp_path):
    ds = _dataset(8)
    path = schema.write_store(ds.isel(time=slice(0, 3)), tmp_path / "s.zarr", times_per_shard=4)
    schema.write_store(ds.isel(time=slice(3, 8)), path, append=True)
    back = schema.open_store(path).load()
    xr.testing.assert_identical(back.drop_encoding(), ds)
    with pytest.raises(ValueError, match="not after"):
        schema.write_store(ds.isel(time=slice(6, 8)), path, append=True)
    with pytest.raises(FileExistsError):
        schema.write_store(ds, path)


def test_data_schema_block_read_touches_one_inner_chunk(tmp_path):
    path = schema.write_store(_dataset(), tmp_path / "s.zarr", times_per_shard=8)
    arr = zarr.open_array(str(path / "temperature"))
    np.testing.assert_array_equal(arr[5, :, 8:16, 16:32], _dataset()["temperature"].values[5, :, 8:16, 16:32])
    assert len(list((path / "temperature").rglob("c/*/*/*/*"))) == 1  # one shard file holds it all


@pytest.mark.parametrize(
    ("mutate", "variables", "levels", "culprit"),
    [
        (lambda d: d.drop_vars("2m_temperature"), ["temperature", "2m_temperature"], [], "2m_temperature"),
        (lambda d: d, ["temperature"], [500, 300], r"\[300\]"),
        (lambda d: d.assign(temperature=d["temperature"].transpose("time", "latitude", "level", "longitude")),
         ["temperature"], [], "temperature.*dims"),
        (lambda d: d.isel(latitude=slice(None, None, -1)), ["temperature"], [], "latitude"),
        (lambda d: d.isel(time=[0, 1, 2, 4, 5]), ["temperature"], [], "2020-01-01T12.* -> 2020-01-02T00"),
        (lambda d: d.assign_coords(longitude=d.longitude - 180), ["temperature"], [], "longitude"),
    ],
    ids=["missing_variable", "missing_level", "wrong_dims", "descending_lat", "time_gap", "lon_range"],
)
def test_data_validate_store_names_the_culprit(mutate, variables, levels, culprit):
    ds = _dataset()
    schema.validate_store(ds, ["temperature", "2m_temperature", "land_sea_mask"], [500, 850])
    with pytest.raises(ValueError, match=culprit):
        schema.validate_store(mutate(ds), variables, levels)


def test_data_validate_store_unknown_variable():
    with pytest.raises(ValueError, match="not a WeatherBench2"):
        schema.validate_store(_dataset().rename(temperature="tmp"), ["tmp"], [])
