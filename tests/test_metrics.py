"""Metrics against independent references: scoringrules, xskillscore and direct numpy formulas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scoringrules as sr
import xarray as xr
import xskillscore as xs

from aeris_ds.evaluate import metrics
from aeris_ds.evaluate.weights import latitude_weights

DIMS = ("time", "prediction_timedelta", "number", "level", "latitude", "longitude")


def _random_case(seed: int = 0, members: int = 5) -> tuple[xr.Dataset, xr.Dataset, xr.Dataset]:
    """Forecast, aligned truth and climatology on a small global grid with pole rows."""
    rng = np.random.default_rng(seed)
    shape = (3, 2, members, 2, 7, 12)
    coords = {"time": pd.date_range("2020-01-01", periods=3, freq="12h"),
              "prediction_timedelta": pd.to_timedelta([6, 12], unit="h"), "number": np.arange(members),
              "level": [500.0, 850.0], "latitude": np.linspace(-90, 90, 7),
              "longitude": np.arange(0, 360, 30.0)}
    truth = xr.Dataset({"temperature": (DIMS[:2] + DIMS[3:], rng.normal(size=shape[:2] + shape[3:]))},
                       coords={k: v for k, v in coords.items() if k != "number"})
    fc = xr.Dataset({"temperature": (DIMS, rng.normal(0.3, 1.2, size=shape))}, coords=coords)
    clim = truth * 0 + rng.normal(0, 0.2, size=shape[3:])
    return fc, truth, clim


@pytest.fixture(scope="module")
def era5_case(era5_grib_path) -> tuple[xr.Dataset, xr.Dataset]:
    """Real ERA5 EDA: members 1-8 as a forecast from the first time, member 9 as truth.

    Member 0 is the unperturbed control (much closer to the ensemble mean), so it is left out: the
    remaining members are exchangeable, which gives the spread/skill check below a known expectation.
    """
    ds = xr.open_dataset(era5_grib_path, engine="cfgrib").load()
    ds = ds.rename(isobaricInhPa="level", z="geopotential", t="temperature").drop_vars(["valid_time", "step"])
    leads = ds["time"].values - ds["time"].values[0]
    as_fc = ds.rename(time="prediction_timedelta").assign_coords(prediction_timedelta=leads)
    as_fc = as_fc.expand_dims(time=ds["time"].values[:1]).transpose("time", "prediction_timedelta", "number",
                                                                    ...)
    return as_fc.isel(number=slice(1, 9)), as_fc.isel(number=9, drop=True)


def _w(lat: xr.DataArray, weighting: str = "area") -> np.ndarray:
    return latitude_weights(lat, weighting).values[:, None]


def _spatial(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Independent weighted mean over the last two axes (latitude, longitude)."""
    return (x * w).sum((-2, -1)) / (w.sum() * x.shape[-1])


def test_metric_area_weights_known_values():
    w = latitude_weights(np.array([-90.0, 0.0, 90.0]))
    cap, band = 1 - np.sin(np.pi / 4), 2 * np.sin(np.pi / 4)  # polar caps and equatorial band
    np.testing.assert_allclose(w.values, np.array([cap, band, cap]) * 3 / 2)
    for lat in (np.linspace(-90, 90, 121), np.arange(-89.25, 90, 1.5), np.linspace(90, -90, 61)):
        assert latitude_weights(lat).values.sum() == pytest.approx(lat.size)
        assert latitude_weights(lat, "cos").values.mean() == pytest.approx(1.0)
    # without pole rows, cell areas of a regular grid are exactly proportional to cos(lat)
    offset = np.arange(-89.25, 90, 1.5)
    np.testing.assert_allclose(latitude_weights(offset).values, latitude_weights(offset, "cos").values)
    # descending latitude gives the same weights per row
    np.testing.assert_allclose(latitude_weights(np.linspace(90, -90, 61)).values,
                               latitude_weights(np.linspace(-90, 90, 61)).values[::-1])
    assert latitude_weights(np.linspace(-90, 90, 61), "cos").values[0] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="weighting"):
        latitude_weights(offset, "gaussian")


@pytest.mark.parametrize("weighting", ["area", "cos"])
def test_metric_rmse_bias_match_xskillscore(weighting):
    fc, truth, _ = _random_case()
    f, t = fc.temperature.mean("number"), truth.temperature
    w = latitude_weights(t.latitude, weighting).broadcast_like(t.isel(time=0, prediction_timedelta=0,
                                                                      level=0))
    per_time = xs.rmse(f, t, dim=["latitude", "longitude"], weights=w)
    got = metrics.rmse(fc, truth, weighting=weighting).temperature
    xr.testing.assert_allclose(got, per_time.mean("time").transpose(*got.dims))
    got = metrics.rmse(fc, truth, weighting=weighting, aggregation="sqrt_of_time_mean").temperature
    mse = xs.mse(f, t, dim=["latitude", "longitude"], weights=w).mean("time")
    xr.testing.assert_allclose(got, np.sqrt(mse).transpose(*got.dims))
    assert not np.allclose(got, per_time.mean("time").transpose(*got.dims))  # the variants differ
    got = metrics.bias(fc, truth, weighting=weighting).temperature
    xr.testing.assert_allclose(got, xs.me(f, t, dim=["latitude", "longitude"], weights=w).mean("time")
                               .transpose(*got.dims))
    assert weighting in got.attrs["definition"] or "cell-area" in got.attrs["definition"]


def test_metric_acc_mae_match_numpy():
    fc, truth, clim = _random_case(1)
    f = fc.temperature.values.mean(2)
    t, c = truth.temperature.values, clim.temperature.values
    w = _w(truth.latitude)
    fa, ta = f - c, t - c
    expected = (_spatial(fa * ta, w) / np.sqrt(_spatial(fa**2, w) * _spatial(ta**2, w))).mean(0)
    np.testing.assert_allclose(metrics.acc(fc, truth, clim).temperature.values, expected)
    np.testing.assert_allclose(metrics.mae(fc, truth).temperature.values, _spatial(abs(f - t), w).mean(0))
    np.testing.assert_allclose(metrics.mae(fc, truth, member=2).temperature.values,
                               _spatial(abs(fc.temperature.values[:, :, 2] - t), w).mean(0))
    assert metrics.acc(fc, truth, clim).temperature.dims == ("prediction_timedelta", "level")


def test_crps_fair_matches_scoringrules_random():
    fc, truth, _ = _random_case(2, members=7)
    ens = fc.temperature.transpose(..., "number").values
    ref = sr.crps_ensemble(truth.temperature.values, ens, m_axis=-1, estimator="fair")
    got = metrics.fair_crps_pointwise(fc.temperature, truth.temperature).transpose(*truth.temperature.dims)
    np.testing.assert_allclose(got.values, ref, rtol=1e-10)
    # the "nrg" (biased) estimator must differ: we really are computing the fair one
    assert not np.allclose(got.values, sr.crps_ensemble(truth.temperature.values, ens, estimator="nrg"))
    expected = _spatial(ref, _w(truth.latitude)).mean(0)
    np.testing.assert_allclose(metrics.crps(fc, truth).temperature.values, expected, rtol=1e-10)
    # one member: fair CRPS is the absolute error
    one = fc.isel(number=[0])
    np.testing.assert_allclose(metrics.fair_crps_pointwise(one, truth).temperature.values,
                               abs(one.temperature.isel(number=0) - truth.temperature).values)


def test_metric_spread_skill_matches_direct_formula():
    fc, truth, _ = _random_case(3, members=6)
    x, t, w = fc.temperature.values, truth.temperature.values, _w(truth.latitude)
    var = x.var(axis=2, ddof=1)
    spread = np.sqrt(_spatial(var, w)).mean(0)
    skill = np.sqrt(_spatial((x.mean(2) - t) ** 2, w)).mean(0)
    got = metrics.spread_skill_ratio(fc, truth)
    np.testing.assert_allclose(got.temperature.values, spread / skill)
    assert "without the finite-ensemble factor" in got.attrs["definition"]
    corrected = metrics.spread_skill_ratio(fc, truth, finite_ensemble_correction=True)
    np.testing.assert_allclose(corrected.temperature.values, spread / skill * np.sqrt(7 / 6))
    assert "sqrt((M+1)/M)" in corrected.attrs["definition"]
    with pytest.raises(ValueError, match="at least 2 members"):
        metrics.spread(fc.isel(number=[0]))


@pytest.mark.parametrize("weighting", ["area", "cos"])
def test_metric_spectrum_parseval(weighting):
    fc, _, _ = _random_case(4)
    spec = metrics.zonal_power_spectrum(fc.temperature, weighting=weighting)
    x, w = fc.temperature.values, _w(fc.latitude, weighting)
    mean_square = _spatial(x**2, w).mean((0, 2))
    zonal_var = (x.var(axis=-1) * w[:, 0]).sum(-1) / w.sum()
    np.testing.assert_allclose(spec.sum("wavenumber").values, mean_square)
    np.testing.assert_allclose(spec.sel(wavenumber=slice(1, None)).sum("wavenumber").values,
                               zonal_var.mean((0, 2)))
    # a pure zonal wave k=3 puts all its variance at wavenumber 3
    lon = np.deg2rad(fc.longitude.values)
    wave = fc.temperature * 0 + 2 * np.cos(3 * lon)
    power = metrics.zonal_power_spectrum(wave, weighting=weighting).isel(prediction_timedelta=0, level=0)
    np.testing.assert_allclose(power.values, np.where(power.wavenumber == 3, 2.0, 0.0), atol=1e-12)
    band = metrics.zonal_power_spectrum(fc.temperature, lat_band=(-30, 30))
    assert band.dims == ("prediction_timedelta", "level", "wavenumber")
    assert "latitudes -30..30" in band.attrs["definition"]
    rows = slice(2, 5)  # -30, 0, 30 with their full-grid cell areas (edges at ±45, not ±90)
    x_band, w_band = x[..., rows, :], latitude_weights(fc.latitude).values[rows][:, None]
    np.testing.assert_allclose(band.sum("wavenumber").values, _spatial(x_band**2, w_band).mean((0, 2)))


def test_metric_era5_members_against_references(era5_case):
    fc, truth = era5_case
    w = latitude_weights(truth.latitude)
    for name in ("geopotential", "temperature"):
        f, t = fc[name].astype("float64"), truth[name].astype("float64")
        ref = sr.crps_ensemble(t.values, f.transpose(..., "number").values, estimator="fair")
        np.testing.assert_allclose(metrics.fair_crps_pointwise(f, t).transpose(*t.dims).values, ref,
                                   rtol=1e-9)
        wb = w.broadcast_like(t.isel(time=0, prediction_timedelta=0, level=0))
        xs_rmse = xs.rmse(f.mean("number"), t, dim=["latitude", "longitude"], weights=wb).mean("time")
        got = metrics.rmse(f, t)
        xr.testing.assert_allclose(got, xs_rmse.transpose(*got.dims))
        assert float(got.max()) > 0  # real members disagree with member 0
        x = f.values
        spread = np.sqrt(_spatial(x.var(axis=2, ddof=1), w.values[:, None])).mean(0)
        np.testing.assert_allclose(metrics.spread(f).values, spread)
    # truth exchangeable with the members: E[spread^2 (M+1)/M] = E[skill^2], so the corrected ratio is ~1
    ratio = metrics.spread_skill_ratio(fc, truth, finite_ensemble_correction=True)
    assert ratio.temperature.dims == ("prediction_timedelta", "level")
    for name in ("geopotential", "temperature"):
        assert 0.85 < float(ratio[name].mean()) < 1.15
