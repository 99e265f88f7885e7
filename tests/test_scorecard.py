"""Scorecard, baselines, stability report and the evaluate CLI on small synthetic stores."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from aeris_ds.errors import DataError
from aeris_ds.evaluate import baselines
from aeris_ds.evaluate.cli import main
from aeris_ds.evaluate.scorecard import METRICS, score, write_scorecard
from aeris_ds.evaluate.stability import stability_report
from aeris_ds.evaluate.weights import latitude_weights

INITS = ["2020-01-07", "2020-01-08T12"]
LEADS_H = [0, 6, 24, 48]


def _truth(days: int = 12, seed: int = 0) -> xr.Dataset:
    """A wave travelling eastward on a 10-degree grid, plus noise; one level and one surface field."""
    rng = np.random.default_rng(seed)
    time = pd.date_range("2020-01-01", periods=days * 4, freq="6h")
    lat, lon = np.linspace(-90, 90, 19), np.arange(0, 360, 10.0)
    step = np.arange(time.size)[:, None, None]
    la, lo = np.deg2rad(lat)[None, :, None], np.deg2rad(lon)[None, None, :]
    base = 280 + 20 * np.cos(la) + 5 * np.sin(3 * lo - 0.2 * step) * np.cos(la)
    base = base + rng.normal(0, 0.5, base.shape)
    return xr.Dataset({"temperature": (("time", "level", "latitude", "longitude"), base[:, None] - 30),
                       "2m_temperature": (("time", "latitude", "longitude"), base + 8)},
                      coords={"time": time, "level": [500.0], "latitude": lat, "longitude": lon})


def _forecast(truth: xr.Dataset, members: int = 4, seed: int = 1, noise: float = 0.5) -> xr.Dataset:
    """Truth at the valid times plus independent member noise, in the WB2 forecast layout."""
    rng = np.random.default_rng(seed)
    grid = xr.Dataset(coords={"time": pd.DatetimeIndex(INITS),
                              "prediction_timedelta": pd.to_timedelta(LEADS_H, unit="h")})
    fc = baselines.align_truth(truth, grid).drop_vars("valid_time").expand_dims(number=np.arange(members),
                                                                                 axis=2)
    return fc.map(lambda da: da + noise * rng.standard_normal(da.shape))


@pytest.fixture(scope="module")
def case() -> tuple[xr.Dataset, xr.Dataset, xr.Dataset]:
    truth = _truth()
    clim = baselines.compute_climatology(truth.sel(time=slice(None, "2020-01-06")), window_days=5)
    return _forecast(truth), truth, clim


def test_score_persistence_equals_hand_computed(case):
    fc, truth, clim = case
    scores = score(fc, truth, clim)
    assert set(scores["system"].values) == {"forecast", "persistence", "climatology"}
    w = latitude_weights(truth.latitude).values[:, None]
    lead = np.timedelta64(24, "h")
    errs = []
    for init in pd.DatetimeIndex(INITS):
        diff = truth.temperature.sel(time=init + pd.Timedelta(lead)) - truth.temperature.sel(time=init)
        errs.append(np.sqrt((diff.values[0] ** 2 * w).sum() / (w.sum() * diff.sizes["longitude"])))
    got = scores.temperature.sel(system="persistence", metric="rmse", prediction_timedelta=lead, level=500.0,
                                 estimate="value")
    assert float(got) == pytest.approx(np.mean(errs), rel=1e-12)
    at0 = scores.sel(prediction_timedelta=np.timedelta64(0, "h"), system="persistence", estimate="value")
    assert float(at0.temperature.sel(metric="rmse", level=500.0)) == 0.0
    assert "(WB2 headline)" in scores.attrs["definitions"]["persistence"]["rmse"]
    # spread is undefined for the one-member baselines, defined for the ensemble
    assert np.isnan(scores["2m_temperature"].sel(system="climatology", metric="spread")).all()
    assert (scores["2m_temperature"].sel(system="forecast", metric="spread") > 0).all()
    # the forecast beats both baselines beyond lead 0 on this synthetic case
    rmse = scores.temperature.sel(metric="rmse", level=500.0, estimate="hi").isel(prediction_timedelta=slice(1, None))
    assert (rmse.sel(system="forecast") < rmse.sel(system="persistence")).all()
    assert (rmse.sel(system="forecast") < rmse.sel(system="climatology")).all()


def test_score_climatology_window_and_missing_days():
    truth = _truth(days=3)
    clim = baselines.compute_climatology(truth, window_days=1)
    expected = truth.temperature.sel(time=truth.time.dt.hour == 6).sel(time=slice("2020-01-01", "2020-01-03"))
    np.testing.assert_allclose(clim.temperature.sel(dayofyear=2, hour=6).values, expected.mean("time").values)
    assert sorted(clim.dayofyear.values.tolist()) == [1, 2, 3, 4, 366]
    some = baselines.compute_climatology(truth.isel(time=slice(4, None)), window_days=1, days=[1, 3])
    assert some.dayofyear.values.tolist() == [1, 3]  # reads days 366..4 only, returns the days asked for
    xr.testing.assert_allclose(some, baselines.compute_climatology(truth.isel(time=slice(4, None)),
                                                                   window_days=1).sel(dayofyear=[1, 3]))
    grid = xr.Dataset(coords={"time": pd.DatetimeIndex(["2020-01-03"]),
                              "prediction_timedelta": pd.to_timedelta([48], unit="h")})
    with pytest.raises(KeyError, match=r"\(5, 0\)"):
        baselines.climatology_forecast(clim, grid)


def test_score_missing_truth_times_are_named(case):
    fc, truth, clim = case
    with pytest.raises(KeyError, match="2020-01-10T12:00:00"):
        score(fc, truth.sel(time=slice(None, "2020-01-10T06")), clim)


def test_score_stability_flags_blow_up_smoothing_and_excess_power(case):
    _, truth, _ = case
    fc = _forecast(truth, noise=0.1)  # 0.5 would double the truth's (white, std 0.5) small-scale power
    clean = stability_report(fc, truth)
    assert clean.flags == []
    assert [c.passed for c in clean.criteria[:2]] == [True, True]  # bounded, band power ratios
    growth = xr.DataArray(np.array([1.0, 1.0, 3.0, 6.0]), dims="prediction_timedelta")
    anomaly = fc - fc.mean(["latitude", "longitude"])
    blown = stability_report(fc.mean(["latitude", "longitude"]) + anomaly * growth, truth)
    assert blown.blow_up and not blown.smoothing
    assert any("temperature level 500 from lead 24 h" in f for f in blown.flags)
    def truncate(a: np.ndarray) -> np.ndarray:  # keep zonal wavenumbers <= 6 only
        spec = np.fft.rfft(a, axis=-1)
        spec[..., 7:] = 0
        return np.fft.irfft(spec, n=a.shape[-1], axis=-1)

    smooth = fc.map(lambda da: da.copy(data=truncate(da.values)))
    smoothed = stability_report(smooth, truth)
    assert smoothed.smoothing and not smoothed.blow_up
    ratio = smoothed.diagnostics.temperature.sel(diagnostic="power_ratio_high")
    assert float(ratio.max()) < 0.5
    assert next(c for c in smoothed.criteria if c.name == "band power ratios").passed is False
    grid_scale = xr.DataArray((-1.0) ** np.arange(fc.sizes["longitude"]), dims="longitude")  # k = Nyquist
    noisy = stability_report(fc + grid_scale, truth)
    assert noisy.excess_power and not noisy.blow_up and not noisy.smoothing
    assert any(f.startswith("excess power: temperature level 500 from lead 0 h (high-k") for f in noisy.flags)
    worst = next(c for c in noisy.criteria if c.name == "band power ratios")
    assert worst.passed is False and "high" in worst.detail
    nan_fc = fc.copy(deep=True)
    nan_fc["2m_temperature"][0, 3, 0, 0, 0] = np.nan
    flags = stability_report(nan_fc, truth).flags
    assert any(f.startswith("blow-up: 2m_temperature from lead 48 h") for f in flags)


def test_score_written_and_cli_end_to_end(case, tmp_path, capsys):
    fc, truth, clim = case
    paths = write_scorecard(score(fc, truth, clim, weighting="cos"), tmp_path / "direct",
                            stability=stability_report(fc, truth))
    doc = json.loads(paths["json"].read_text())
    assert doc["weighting"] == "cos" and "cos(latitude)" in doc["definitions"]["forecast"]["rmse"]
    assert pd.read_csv(paths["csv"]).shape[0] == len(doc["scores"]) == 3 * len(METRICS) * 4 * 2
    fc.to_zarr(tmp_path / "fc.zarr")
    truth.to_zarr(tmp_path / "truth.zarr")
    out = tmp_path / "eval"
    rc = main([str(tmp_path / "fc.zarr"), "--truth", str(tmp_path / "truth.zarr"), "--out", str(out),
               "--variables", "temperature", "--climatology-from", "2020-01-01/2020-01-06",
               "--climatology-window-days", "5"])
    assert rc == 0
    printed = capsys.readouterr().out
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["hovmoller_temperature_500.png", "maps_temperature_500.png",
                                      "rank_histogram_temperature_500.png", "skill_temperature_500.png",
                                      "spectra_temperature_500.png", "spread_skill_temperature_500.png"]
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert str(png) in printed
    cli_scores = pd.read_csv(out / "scores.csv")
    direct = score(fc, truth, clim, variables=["temperature"])
    row = cli_scores.query("system == 'persistence' and metric == 'rmse' and lead_hours == 24")
    assert row["value"].item() == pytest.approx(float(direct.temperature.sel(
        system="persistence", metric="rmse", prediction_timedelta=np.timedelta64(24, "h"), level=500.0,
        estimate="value")))
    with pytest.raises(DataError, match="short.zarr: truth lacks"):
        truth.sel(time=slice(None, "2020-01-09")).to_zarr(tmp_path / "short.zarr")
        main([str(tmp_path / "fc.zarr"), "--truth", str(tmp_path / "short.zarr"), "--out", str(out)])


def test_stability_judges_bands_up_to_a_declared_truncation(case):
    _, truth, _ = case
    truth = truth.assign_attrs(spectral_truncation=12)  # 36 longitudes: k 13..18 lie beyond T12
    fc = _forecast(truth, noise=0.1)
    lon = np.deg2rad(fc["longitude"])
    beyond = stability_report(fc + 3.0 * np.cos(18 * lon), truth)  # power at the Nyquist k only
    bands = next(c for c in beyond.criteria if c.name == "band power ratios")
    assert bands.passed is True and not beyond.excess_power
    reported = next(c for c in beyond.criteria if c.name == "power beyond T12 (not judged)")
    assert reported.passed is None and "interpolation residue" in reported.detail
    ratio = float(beyond.diagnostics.temperature.sel(diagnostic="power_ratio_beyond").max())
    assert ratio > 10 and f"{ratio:.3g}" in reported.detail
    inside = stability_report(fc + 3.0 * np.cos(10 * lon), truth)  # k = 10: the high third of 1..12
    bands = next(c for c in inside.criteria if c.name == "band power ratios")
    assert bands.passed is False and "high" in bands.detail and inside.excess_power
    assert "power_ratio_beyond" not in stability_report(fc, truth.assign_attrs(spectral_truncation=None)
                                                        ).diagnostics.diagnostic
