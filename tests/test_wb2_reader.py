"""WeatherBench2 stores as downloaded, read in place: splits from the YAML, the grid adapted in the reader
(latitude either way, longitude [0, 360) or [-180, 180), poles cropped or padded), forcings from the store.

Every read is compared with an independent xarray reference (sortby + isel on the same data), and the
stores' files are hashed before and after to show nothing was written into them.
"""

from __future__ import annotations

import numpy as np
import pytest
from wb2 import N_LON, tree_hash, wb2_dataset, write_wb2

from aeris_ds.config import load_config
from aeris_ds.data import schema, solar
from aeris_ds.data.forcings import Forcings
from aeris_ds.data.grid_adapt import adapt_grid
from aeris_ds.data.source import WeatherSource
from aeris_ds.data.stats import compute_stats
from aeris_ds.errors import DataError

SPLITS = {"train": "2000-01-01/2000-01-04", "valid": "2000-01-05/2000-01-05", "test": "2000-01-06/2000-01-06"}
KINDS = {"descending": (True, False), "ascending_lon180": (False, True)}


def _cfg(store, adapt: str = "crop", lat: int = 32, splits=SPLITS):
    return load_config("tiny", {"grid": {"lat": lat, "lon": N_LON},
                                "data": {"store": str(store), "grid_adapt": adapt, "splits": splits,
                                         "forcings": ["toa_solar", "statics", "time"]}})


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wb2")
    out = {kind: write_wb2(wb2_dataset(*flags), tmp / f"{kind}.zarr") for kind, flags in KINDS.items()}
    hashes = {kind: tree_hash(path) for kind, path in out.items()}
    yield out
    for kind, path in out.items():
        assert tree_hash(path) == hashes[kind], f"{kind} store was modified"


def _reference(kind: str):
    """The model's view built independently with xarray: ascending lat, lon in [0, 360), south pole cropped."""
    ds = wb2_dataset(*KINDS[kind])
    ds = ds.assign_coords(longitude=ds["longitude"].values % 360).sortby("longitude").sortby("latitude")
    return ds.isel(latitude=slice(1, None))


@pytest.mark.parametrize("kind", list(KINDS))
def test_reader_adapts_the_grid_without_copying(stores, kind):
    cfg = _cfg(stores[kind])
    ref = _reference(kind)
    src = WeatherSource(stores[kind], cfg.data, "train", grid=(32, N_LON))
    np.testing.assert_array_equal(src.lat, ref["latitude"].values)
    np.testing.assert_array_equal(src.lon, ref["longitude"].values)
    rows, cols = np.arange(5, 21), np.arange(8, 40)  # a block, as one rank reads it
    got = src.read_times(slice(3, 5), rows, cols)
    want = np.concatenate([ref[v].values[3:5, :, rows][..., cols] for v in cfg.data.atmospheric]
                          + [ref[v].values[3:5, None, rows][..., cols] for v in cfg.data.surface], axis=1)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(src.static("land_sea_mask", rows, cols),
                                  ref["land_sea_mask"].values[rows][:, cols])
    assert "latitude descending" in src.grid.description or kind != "descending"
    assert "[−180, 180)" in src.grid.description or kind == "descending"


def test_toa_forcing_from_the_store_and_computed_past_its_end(stores):
    cfg = _cfg(stores["descending"])
    src = WeatherSource(stores["descending"], cfg.data, grid=(32, N_LON))
    rows, cols = np.arange(8, 16), np.arange(N_LON)
    forcing = Forcings(src, ["toa_solar"], rows, cols)
    assert forcing.stored_toa
    ref = _reference("descending")["toa_incident_solar_radiation"]
    t = src.times[7]
    np.testing.assert_allclose(forcing(t)[0], ref.sel(time=t).values[rows] / (solar.SOLAR_CONSTANT * 3600))
    later = src.times[-1] + np.timedelta64(6, "h")  # a rollout past the store: the same quantity, computed
    energy = solar.toa_incident_solar_radiation(np.array([later]), src.lat[rows], src.lon, integrated=True)[0]
    np.testing.assert_allclose(forcing(later)[0], energy / (solar.SOLAR_CONSTANT * 3600), rtol=1e-6)


def test_splits_from_the_yaml_win_over_store_attributes(stores, tmp_path):
    src = WeatherSource(stores["descending"], _cfg(stores["descending"]).data, "valid", grid=(32, N_LON))
    assert (src.split_slice.start, src.split_slice.stop) == (16, 20)  # the whole day, 00 to 18 UTC
    with pytest.raises(DataError, match="set data.splits.train"):
        WeatherSource(stores["descending"], _cfg(stores["descending"], splits={}).data, "train", grid=(32, N_LON))
    with pytest.raises(ValueError, match="holds no time"):
        WeatherSource(stores["descending"], _cfg(stores["descending"], splits={"train": "1990-01-01/1990-02-01"})
                      .data, "train", grid=(32, N_LON))
    ours = schema.write_store(_reference("descending").assign_attrs(split_train="2000-01-02/2000-01-03"),
                              tmp_path / "ours.zarr")
    by_attr = WeatherSource(ours, _cfg(ours, "none", splits={}).data, "train")
    assert (by_attr.split_slice.start, by_attr.split_slice.stop) == (4, 12)


def test_stats_of_a_wb2_store_equal_those_of_its_adapted_copy(stores, tmp_path):
    ours = schema.write_store(_reference("ascending_lon180"), tmp_path / "ours.zarr")
    wb2 = compute_stats(WeatherSource(stores["ascending_lon180"], _cfg(stores["ascending_lon180"]).data, "train",
                                      grid=(32, N_LON)), progress=False)
    copy = compute_stats(WeatherSource(ours, _cfg(ours, "none").data, "train"), progress=False)
    assert wb2 == copy


def test_grid_adapt_modes():
    lat = np.linspace(90, -90, 33)
    lon = np.arange(-180, 180, 5.625)
    dropped = adapt_grid(lat, lon, "drop_poles")
    assert dropped.shape == (31, 64) and dropped.lat[0] > -90 and dropped.lat[-1] < 90
    np.testing.assert_array_equal(lat[dropped.rows], dropped.lat)
    padded = adapt_grid(lat, lon, "pad", rows=40)
    assert padded.shape == (40, 64) and padded.real == slice(4, 37)
    np.testing.assert_array_equal(padded.rows[:5], [32] * 5)  # south pole row repeated
    np.testing.assert_array_equal(padded.lat[:4], -90.0)
    np.testing.assert_array_equal(lon[padded.cols] % 360, padded.lon)
    assert padded.lon[0] == 0 and np.all(np.diff(padded.lon) > 0)
    with pytest.raises(ValueError, match="cannot crop 33 latitudes to 40"):
        adapt_grid(lat, lon, "crop", rows=40)


def test_a_grid_that_does_not_fit_names_the_setting(stores):
    with pytest.raises(ValueError, match=r"store 33×64 → model 33×64 .* config grid is 32×64 .*grid_adapt"):
        WeatherSource(stores["descending"], _cfg(stores["descending"], "none").data, grid=(32, N_LON))


def test_info_reports_the_adaptation_and_the_splits(stores):
    from aeris_ds.describe import describe

    text = describe(_cfg(stores["descending"]).model_copy(update={"layout": load_config("tiny").layout}))
    assert "store 33×64 → model 32×64 (latitude descending → ascending, rows cropped) [data.grid_adapt crop]" in text
    assert "train 2000-01-01/2000-01-04 (data.splits.train)" in text
    assert "chunks 33×64 lat×lon: rank 0 decodes 1.0× its share" in text
