"""Bad input to the data pipeline: each class is a clear error naming the variable, time, chunk or file.

Store-level problems (missing variable or level, wrong dims, time gap, grid or stats mismatch) are found
when the source or the examples are built, before training starts; damaged values (NaN/inf, a corrupt or
missing chunk) when the sample that holds them is read.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from aeris_ds import cli
from aeris_ds.config import load_config
from aeris_ds.data import schema, verify
from aeris_ds.data.source import WeatherSource
from aeris_ds.data.stats import compute_stats, load_stats, save_stats
from aeris_ds.data.synthetic import synthetic_store
from aeris_ds.errors import DataError, run_command
from aeris_ds.examples import TrainingExamples
from aeris_ds.parallel.layout import WindowGrid

CFG = load_config("tiny")
ROWS, COLS = np.arange(16), np.arange(32)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> xr.Dataset:
    return schema.open_store(synthetic_store(tmp_path_factory.mktemp("valid") / "base.zarr", days=2)).load()


def _write(tmp_path, ds: xr.Dataset, name: str = "bad.zarr"):
    return schema.write_store(ds, tmp_path / name, inner_chunks={"latitude": 8, "longitude": 16})


def test_data_valid_missing_variable(tmp_path, base):
    path = _write(tmp_path, base.drop_vars("temperature"))
    with pytest.raises(DataError, match=r"'temperature' is missing from .*bad\.zarr"):
        WeatherSource(path, CFG.data)


def test_data_valid_missing_level(tmp_path, base):
    path = _write(tmp_path, base.sel(level=[500]))
    with pytest.raises(DataError, match=r"levels \[850\] hPa missing"):
        WeatherSource(path, CFG.data)


def test_data_valid_wrong_dims(tmp_path, base):
    path = _write(tmp_path, base.assign(temperature=base["temperature"].transpose("level", "time", "latitude",
                                                                                   "longitude")))
    with pytest.raises(DataError, match=r"temperature in .*bad\.zarr has dims "
                                        r"\('level', 'time', 'latitude', 'longitude'\)"):
        WeatherSource(path, CFG.data)


def test_data_other_spatial_dim_order_reads_the_same(tmp_path, base):
    """After time, a store may order level/latitude/longitude as it likes: the reader transposes."""
    path = _write(tmp_path, base.assign(temperature=base["temperature"].transpose("time", "longitude", "level",
                                                                                   "latitude")))
    got = WeatherSource(path, CFG.data).read_times(slice(0, 2), ROWS, COLS)
    want = WeatherSource(_write(tmp_path, base, "good.zarr"), CFG.data).read_times(slice(0, 2), ROWS, COLS)
    np.testing.assert_array_equal(got, want)


def test_data_valid_time_gap(tmp_path, base):
    path = _write(tmp_path, base.isel(time=[i for i in range(base.sizes["time"]) if i != 3]))
    with pytest.raises(ValueError, match=r"time gap .* after 2000-01-01T12"):
        WeatherSource(path, CFG.data)


def test_data_valid_lead_not_a_multiple_of_the_step(tiny_store):
    data = CFG.data.model_copy(update={"lead_hours": 9})
    with pytest.raises(ValueError, match=r"lead 9 h is not a multiple of the store's time step 6 h"):
        WeatherSource(tiny_store, data)


def test_data_valid_grid_mismatch(tiny_store):
    source = WeatherSource(tiny_store, CFG.data, "train")
    stats = load_stats(tiny_store, CFG.data.channel_names, CFG.data.lead_hours)
    with pytest.raises(ValueError, match=r"window grid 32×64 does not match the store's grid 16×32"):
        TrainingExamples(source, stats, CFG, WindowGrid(32, 64, (8, 8)), 0, 0, seed=0)


@pytest.mark.parametrize(("value", "variable", "level"), [(np.nan, "u_component_of_wind", 850),
                                                          (np.inf, "2m_temperature", None)])
def test_data_valid_non_finite_value_names_channel_and_time(tmp_path, base, value, variable, level):
    ds = base.copy(deep=True)
    index = {"time": 2, "latitude": 3, "longitude": 7} | ({"level": 1} if level else {})
    ds[variable][index] = value
    path = _write(tmp_path, ds)
    source = WeatherSource(path, CFG.data)
    source.read(1, ROWS, COLS)  # other times are fine
    channel = f"{variable}_{level}" if level else variable
    with pytest.raises(ValueError, match=rf"non-finite values in {channel} at 2000-01-01T12.*bad\.zarr"):
        source.read(2, ROWS, COLS)
    # The stats tool reads the whole training split, so it finds it before any training.
    with pytest.raises(ValueError, match=rf"non-finite values in {channel}"):
        compute_stats(WeatherSource(path, CFG.data, "train"), progress=False)


def test_data_valid_corrupt_chunk_names_variable_time_and_file(tmp_path, base):
    path = _write(tmp_path, base)
    shard = path / "temperature" / "c" / "0" / "0" / "0" / "0"
    shard.write_bytes(np.random.default_rng(0).bytes(shard.stat().st_size))
    source = WeatherSource(path, CFG.data)  # metadata is intact: found when the chunk is read
    with pytest.raises(DataError, match=r"cannot read temperature at 2000-01-01T12.* from .*bad\.zarr: corrupt or "
                                        r"unreadable chunk in temperature/c/0/0/0/0"):
        source.read(2, ROWS, COLS)


def _flip_one_byte(shard, offset: int = 100) -> None:
    data = bytearray(shard.read_bytes())
    data[offset] ^= 0x01  # inside the first inner chunk (time 0, lat/lon block 0); the shard index is at the end
    shard.write_bytes(bytes(data))


def test_data_valid_one_flipped_byte_is_detected_and_verify_lists_it(tmp_path, base, capsys):
    path = _write(tmp_path, base)
    assert verify.main([str(path), "--no-progress"]) is None and "without error" in capsys.readouterr().out
    _flip_one_byte(path / "temperature" / "c" / "0" / "0" / "0" / "0")
    source = WeatherSource(path, CFG.data)
    source.read(1, ROWS, COLS[16:])  # the other chunks still read
    with pytest.raises(DataError, match=r"cannot read temperature at 2000-01-01T00:00 from .*bad\.zarr: .*chunk in "
                                        r"temperature/c/0/0/0/0 \(crc32c checksum mismatch\)"):
        source.read(0, ROWS, COLS)
    (path / "geopotential" / "c" / "0" / "0" / "0" / "0").unlink()
    assert run_command(cli.dispatch, ["data", "verify", str(path), "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "bad chunk: geopotential at 2000-01-01T00:00..2000-01-02T18:00: geopotential/c/0/0/0/0: file missing "
        "(reads as NaN)",
        # An inner chunk holds a block of times (here all 8): the damaged chunk spans them.
        "bad chunk: temperature at 2000-01-01T00:00..2000-01-02T18:00: temperature/c/0/0/0/0: crc32c checksum "
        "mismatch (damaged bytes)"]
    assert err.strip().endswith("2 bad chunk(s) in 2 of 12 files (listed above)")


def test_data_valid_store_without_checksums_still_reads(tmp_path, base):
    path = tmp_path / "old.zarr"
    encoding = {name: {"chunks": (1, *var.shape[1:]), "shards": var.shape} for name, var in base.data_vars.items()
                if "time" in var.dims}
    base.drop_encoding().to_zarr(path, zarr_format=3, consolidated=False, encoding=encoding)
    assert not verify.has_checksums(path) and verify.has_checksums(_write(tmp_path, base))
    np.testing.assert_array_equal(WeatherSource(path, CFG.data).read(3, ROWS, COLS),
                                  WeatherSource(_write(tmp_path, base, "new.zarr"), CFG.data).read(3, ROWS, COLS))
    assert verify.verify(path, progress=False) == (12, [])


def test_data_valid_missing_chunk_reads_as_nan_and_says_so(tmp_path, base):
    path = _write(tmp_path, base)
    (path / "geopotential" / "c" / "0" / "0" / "0" / "0").unlink()  # the shard of every time and level
    source = WeatherSource(path, CFG.data)
    with pytest.raises(ValueError, match=r"non-finite values in geopotential_500 at 2000-01-01T00.*missing chunk"):
        source.read(0, ROWS, COLS)


def test_data_valid_stats_missing_or_made_for_other_channels_or_lead(tmp_path, base):
    path = _write(tmp_path, base)
    with pytest.raises(FileNotFoundError, match=r"normalization stats .*bad\.stats\.json missing: run "
                                                r"`aeris-ds data stats --store .*bad\.zarr --config tiny`"):
        load_stats(path, CFG.data.channel_names, CFG.data.lead_hours, "tiny")
    save_stats(compute_stats(WeatherSource(path, CFG.data, "train"), progress=False), path)
    load_stats(path, CFG.data.channel_names, CFG.data.lead_hours)
    other = CFG.data.channel_names[:-1] + ["sea_surface_temperature"]
    with pytest.raises(ValueError, match=r"made for channels .*mean_sea_level_pressure.* at lead 6 h, the config "
                                         r"asks for .*sea_surface_temperature"):
        load_stats(path, other, CFG.data.lead_hours)
    with pytest.raises(ValueError, match=r"at lead 6 h, the config asks for .* at 12 h"):
        load_stats(path, CFG.data.channel_names, 12)


def test_data_valid_missing_split(tiny_store):
    with pytest.raises(DataError, match=r"no split 'holdout'"):
        WeatherSource(tiny_store, CFG.data, "holdout")


def test_data_valid_truncated_stats_name_the_file(tmp_path, base):
    path = _write(tmp_path, base)
    stats = save_stats(compute_stats(WeatherSource(path, CFG.data, "train"), progress=False), path)
    stats.write_text(stats.read_text()[:40])  # cut short, as by a full disk
    with pytest.raises(DataError, match=r"normalization stats .*bad\.stats\.json are unreadable .* recompute "
                                        r"with `aeris-ds data stats --store .*bad\.zarr --config small --overwrite`"):
        load_stats(path, CFG.data.channel_names, CFG.data.lead_hours)


def test_data_valid_statics_missing_while_the_config_uses_them(tmp_path, base):
    path = _write(tmp_path, base.drop_vars("land_sea_mask"))
    with pytest.raises(DataError, match=r"land_sea_mask missing from .*bad\.zarr, and data\.forcings uses "
                                        r"`statics`"):
        WeatherSource(path, CFG.data, "train")
    no_statics = CFG.data.model_copy(update={"forcings": ["time"]})
    WeatherSource(path, no_statics, "train")  # a config without statics does not need them
