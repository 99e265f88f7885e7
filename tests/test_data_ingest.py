"""ERA5 ingest on the real 10-member EDA GRIB sample, checked against eccodes reading it directly."""

import re

import numpy as np
import pytest
import xarray as xr

from aeris_ds.data import era5, ingest, schema


def _eccodes_messages(path, count):
    """(shortName, level, member, time, field north->south) for the first ``count`` messages."""
    import eccodes

    out = []
    with open(path, "rb") as f:
        while len(out) < count:
            gid = eccodes.codes_grib_new_from_file(f)
            if gid is None:
                break
            try:
                date, hhmm = eccodes.codes_get(gid, "dataDate"), eccodes.codes_get(gid, "dataTime")
                iso = f"{str(date)[:4]}-{str(date)[4:6]}-{str(date)[6:]}T{hhmm // 100:02d}"
                time = np.datetime64(iso, "ns")
                ni, nj = eccodes.codes_get(gid, "Ni"), eccodes.codes_get(gid, "Nj")
                values = eccodes.codes_get_values(gid).reshape(nj, ni)
                out.append((eccodes.codes_get(gid, "shortName"), eccodes.codes_get(gid, "level"),
                            eccodes.codes_get(gid, "number"), time, values,
                            eccodes.codes_get(gid, "latitudeOfFirstGridPointInDegrees")))
            finally:
                eccodes.codes_release(gid)
    return out


def test_data_ingest_grib_matches_eccodes(era5_grib_path, tmp_path):
    store = ingest.ingest([era5_grib_path], tmp_path / "era5.zarr")
    ds = schema.open_store(store)
    schema.validate_store(ds, ["geopotential", "temperature"], [500, 850])
    assert ds["geopotential"].dims == ("time", "number", "level", "latitude", "longitude")
    assert ds["level"].dtype == np.int64 and ds["level"].values.tolist() == [500, 850]
    assert ds.sizes["number"] == 10 and ds.sizes["latitude"] == 61 and ds.sizes["time"] == 4
    assert ds["latitude"].values[0] == -90.0 and np.all(np.diff(ds["latitude"].values) > 0)
    names = {"z": "geopotential", "t": "temperature"}
    messages = _eccodes_messages(era5_grib_path, 200)
    picks = messages[::37]
    assert {m[0] for m in picks} == {"z", "t"} and len(picks) >= 5
    for short, level, number, time, values, lat0 in picks:
        assert lat0 == 90.0  # GRIB scans north -> south; the store is south -> north
        got = ds[names[short]].sel(time=time, number=number, level=level).values
        np.testing.assert_array_equal(got, values[::-1].astype(np.float32))
        assert ds[names[short]].attrs["units"] == schema.UNITS[names[short]]


def test_data_ingest_member_drop_poles_and_resume(era5_grib_path, tmp_path):
    one = era5.convert([era5_grib_path], member=3, drop_poles=True)
    assert one["temperature"].dims == schema.ATMOSPHERIC_DIMS
    assert one.sizes["latitude"] == 59 and np.abs(one["latitude"]).max() == 87.0
    full = era5.convert([era5_grib_path])
    np.testing.assert_array_equal(one["temperature"].values,
                                  full["temperature"].sel(number=3).values[:, :, 1:-1])
    # An interrupted ingest holding the first two times is completed by re-running it.
    path = schema.write_store(one.isel(time=slice(0, 2)), tmp_path / "m3.zarr", kind=ingest.KIND)
    ingest.ingest([era5_grib_path], path, member=3, drop_poles=True)
    xr.testing.assert_equal(schema.open_store(path).load(), one)
    with pytest.raises(ValueError, match="member 12"):
        era5.convert([era5_grib_path], member=12)


def test_data_ingest_units_mismatch_names_variable(era5_grib_path, tmp_path):
    import cfgrib

    [raw] = cfgrib.open_datasets(str(era5_grib_path), backend_kwargs={"indexpath": ""})
    raw["t"].attrs["units"] = "degC"
    with pytest.raises(ValueError, match=r"'t' \(temperature\) has units 'degC'"):
        era5._to_schema(raw, member=None, drop_poles=False)


def test_data_ingest_netcdf_twin_matches_grib(era5_grib_path, era5_nc_path):
    pytest.importorskip("h5netcdf", reason="netCDF-4 input needs the h5netcdf extra")
    from_nc = era5.convert([era5_nc_path])
    from_grib = era5.convert([era5_grib_path])
    xr.testing.assert_allclose(from_nc, from_grib)


def test_data_ingest_bad_files_one_line_error_and_no_store(era5_grib_path, tmp_path, capsys):
    from aeris_ds.errors import run_command

    data = era5_grib_path.read_bytes()
    size = len(data) // 160  # 160 messages of equal size in this sample
    bad = {"truncated.grib": (data[: len(data) * 2 // 3], r"GRIB message 107 is truncated or unreadable"),
           "hole.grib": (data[: 5 * size] + data[6 * size:], r"159 GRIB messages make 160 fields"),
           "empty.grib": (b"", r"is empty"),
           "text.grib": (b"time,t2m\n2020-01-01,280\n", r"holds no GRIB message"),
           "text.nc": (b"time,t2m\n2020-01-01,280\n", r"cannot open .*text\.nc: not a GRIB or netCDF file"),
           "missing.grib": (None, r"argument inputs: .*missing\.grib does not exist")}
    out = tmp_path / "era5.zarr"
    for name, (content, message) in bad.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        assert run_command(ingest.main, [str(era5_grib_path), str(tmp_path / name), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error: ") and name in err, err
        assert re.search(message, err), err
        assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_data_ingest_out_never_an_input_or_foreign_data(era5_grib_path, tmp_path):
    import shutil

    from aeris_ds.errors import OutputError

    grib = tmp_path / "era5.grib"
    shutil.copy(era5_grib_path, grib)
    foreign = schema.write_store(era5.convert([grib], member=0), tmp_path / "other.zarr")  # not ingest's
    for out, why in ((grib, "is the input"), (tmp_path, "contains the input"), (foreign, "not an output")):
        with pytest.raises(OutputError, match=why):
            ingest.ingest([grib], out)
    assert grib.read_bytes() == era5_grib_path.read_bytes() and "number" not in schema.open_store(foreign).dims
    store = ingest.ingest([grib], tmp_path / "era5.zarr", member=1)
    ingest.ingest([grib], store, member=2, overwrite=True)  # an explicit replace of its own kind
    np.testing.assert_array_equal(schema.open_store(store)["temperature"].values,
                                  era5.convert([grib], member=2)["temperature"].values)
