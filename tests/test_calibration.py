"""Bootstrap intervals, rank histograms, spread/skill and the long-rollout stability criteria, on hand-made
ensembles whose answer is known, against direct numpy references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from aeris_ds.evaluate import baselines
from aeris_ds.evaluate.bootstrap import bootstrap, resample_indices
from aeris_ds.evaluate.calibration import rank_histogram_per_init
from aeris_ds.evaluate.scorecard import rank_histograms, score
from aeris_ds.evaluate.stability import stability_report
from aeris_ds.evaluate.weights import latitude_weights

LAT, LON = np.linspace(-80, 80, 9), np.arange(0, 360, 20.0)


def test_bootstrap_matches_direct_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.gamma(2.0, size=(25, 3)), rng.gamma(3.0, size=(25, 3))
    per_init = xr.Dataset({"a": (("time", "lead"), a), "b": (("time", "lead"), b)})
    idx = resample_indices(25, 500, seed=3)
    got = bootstrap(per_init, lambda c: c["a"] / c["b"], indices=idx)
    resampled = a[idx].mean(1) / b[idx].mean(1)  # (resample, lead), the ratio of each resample's means
    np.testing.assert_allclose(got.sel(estimate="value"), a.mean(0) / b.mean(0))
    np.testing.assert_allclose(got.sel(estimate="lo"), np.percentile(resampled, 5, axis=0))
    np.testing.assert_allclose(got.sel(estimate="hi"), np.percentile(resampled, 95, axis=0))
    assert "90% percentile bootstrap interval over 25 init times, 500 resamples" in got.attrs["bootstrap"]
    np.testing.assert_array_equal(resample_indices(25, 500, seed=3), idx)  # seeded: reruns agree
    with pytest.raises(ValueError, match="confidence"):
        bootstrap(per_init, lambda c: c["a"], confidence=90)


def _ensemble_case(shrink: float, inits: int = 30, members: int = 8, seed: int = 0):
    """Truth on a small grid and members exchangeable with it (``shrink`` = 1): member i = truth + s·(e_i - e_0),
    so truth = c + s·e_0 and members = c + s·e_i around the same centre c; ``shrink`` < 1 narrows the members."""
    rng = np.random.default_rng(seed)
    time = pd.date_range("2021-01-01", periods=inits * 4 + 8, freq="6h")
    lo = np.deg2rad(LON)[None, None, :]
    step = np.arange(time.size)[:, None, None]
    field = 10 * np.cos(np.deg2rad(LAT))[None, :, None] * np.sin(2 * lo - 0.3 * step)
    truth = xr.Dataset({"2m_temperature": (("time", "latitude", "longitude"),
                                           280 + field + rng.normal(0, 1, (time.size, LAT.size, LON.size)))},
                       coords={"time": time, "latitude": LAT, "longitude": LON})
    grid = xr.Dataset(coords={"time": time[:inits * 4:4], "prediction_timedelta": pd.to_timedelta([12, 24], "h")})
    aligned = baselines.align_truth(truth, grid).drop_vars("valid_time")["2m_temperature"]
    e0 = rng.normal(0, 1, aligned.shape)
    ei = rng.normal(0, 1, (members, *aligned.shape))
    fc = aligned.values[None] + 2.0 * (shrink * ei - e0)
    forecast = xr.Dataset({"2m_temperature": (("number", *aligned.dims), fc)},
                          coords={"number": np.arange(members), **aligned.coords}).transpose(
        "time", "prediction_timedelta", "number", ...)
    return forecast, truth, baselines.compute_climatology(truth, window_days=30)


@pytest.mark.parametrize("shrink", [1.0, 0.3])
def test_calibration_spread_skill_and_rank_histogram(shrink):
    forecast, truth, clim = _ensemble_case(shrink)
    scores = score(forecast, truth, clim)["2m_temperature"].sel(system="forecast")
    ssr = scores.sel(metric="spread_skill_corrected")
    flat = scores.sel(metric="rank_outlier_ratio")
    hist = rank_histograms(forecast, truth)["2m_temperature"]
    assert hist.sizes["rank"] == 9
    np.testing.assert_allclose(hist.sel(estimate="value").sum("rank"), 1.0)
    if shrink == 1.0:  # calibrated: spread/skill 1 inside its interval, a flat histogram
        assert ((ssr.sel(estimate="lo") < 1) & (ssr.sel(estimate="hi") > 1)).all()
        assert (abs(ssr.sel(estimate="value") - 1) < 0.05).all()
        # the uncorrected ratio is low by the finite-ensemble factor sqrt(M/(M+1))
        np.testing.assert_allclose(scores.sel(metric="spread_skill", estimate="value"),
                                   ssr.sel(estimate="value") * np.sqrt(8 / 9))
        # flat: the outlier ratio's interval reaches 1 within sampling noise (a 90 % interval misses 1 at times)
        assert ((flat.sel(estimate="lo") < 1.05) & (flat.sel(estimate="hi") > 0.95)).all()
        assert (scores.sel(metric="rank_reliability_index", estimate="value") < 0.1).all()
        assert (abs(hist.sel(estimate="value") - 1 / 9) < 0.02).all()
    else:  # shrunk: under-dispersive, a U-shaped histogram
        assert (ssr.sel(estimate="hi") < 0.6).all()
        assert (flat.sel(estimate="lo") > 2).all()
        ends = hist.sel(estimate="value").isel(rank=[0, -1]).mean("rank")
        assert (ends > 3 * hist.sel(estimate="value").isel(rank=4)).all()


def test_rank_histogram_matches_numpy_weighted_histogram():
    forecast, truth, _ = _ensemble_case(0.5, inits=3, members=5)
    aligned = baselines.align_truth(truth, forecast)["2m_temperature"]
    got = rank_histogram_per_init(forecast["2m_temperature"], aligned)
    x = forecast["2m_temperature"].values[1, 0]  # init 1, lead 12 h: (member, lat, lon)
    y = aligned.values[1, 0]
    ranks = (x < y).sum(0)
    w = np.broadcast_to(latitude_weights(LAT).values[:, None], y.shape)
    expected, _ = np.histogram(ranks, bins=np.arange(7) - 0.5, weights=w)
    np.testing.assert_allclose(got.isel(time=1, prediction_timedelta=0).values, expected / w.sum())


def _long_case(leads_days=(1, 30, 60, 90), members: int = 3):
    """A 95-day truth with z500 and t850 (travelling waves + noise) and a forecast equal to it plus less noise."""
    rng = np.random.default_rng(5)
    time = pd.date_range("2020-01-01", periods=95 * 4, freq="6h")
    la, lo = np.deg2rad(LAT)[None, :, None], np.deg2rad(LON)[None, None, :]
    step = np.arange(time.size)[:, None, None]
    wave = np.cos(la) * (np.sin(3 * lo - 0.2 * step) + 0.3 * np.sin(7 * lo + 0.1 * step))
    levels = np.array([500.0, 850.0])
    z = 5.5e4 + 2e3 * wave[:, None] + rng.normal(0, 30, (time.size, 2, LAT.size, LON.size))
    t = 260 + 10 * wave[:, None] + rng.normal(0, 0.3, (time.size, 2, LAT.size, LON.size))
    dims = ("time", "level", "latitude", "longitude")
    truth = xr.Dataset({"geopotential": (dims, z), "temperature": (dims, t)},
                       coords={"time": time, "level": levels, "latitude": LAT, "longitude": LON})
    grid = xr.Dataset(coords={"time": time[:8:4], "prediction_timedelta": pd.to_timedelta(leads_days, "D")})
    fc = baselines.align_truth(truth, grid).drop_vars("valid_time").expand_dims(number=np.arange(members), axis=2)
    noise = {"geopotential": 10.0, "temperature": 0.1}  # a third of the truth's own small-scale noise
    return fc.map(lambda da: da + noise[da.name] * rng.standard_normal(da.shape)), truth


def _criterion(report, start: str):
    return next(c for c in report.criteria if c.name.startswith(start))


def test_stability_long_rollout_criteria():
    fc, truth = _long_case()
    clean = stability_report(fc, truth)
    for name in ("spectra within x2", "band power ratios at days", "global-mean temperature level 850 drift"):
        assert _criterion(clean, name).passed is True, _criterion(clean, name)
    warm = fc.copy(deep=True)
    warm["temperature"] = warm["temperature"] + 1.5  # a 1.5 K warm drift everywhere
    drifted = stability_report(warm, truth)
    assert _criterion(drifted, "global-mean temperature level 850 drift").passed is False
    assert "1.5 K" in _criterion(drifted, "global-mean temperature level 850 drift").detail
    assert _criterion(drifted, "spectra within x2").passed is True
    # excess power at one small-scale wavenumber (k = 8, well above 1e-6 of the variance) from day 60 on
    bump = xr.DataArray(np.cos(8 * np.deg2rad(LON)), dims="longitude") * 200.0 * xr.DataArray(
        [0, 0, 1, 1], dims="prediction_timedelta")
    noisy = fc.assign(geopotential=fc["geopotential"] + bump)
    report = stability_report(noisy, truth)
    spectra = _criterion(report, "spectra within x2")
    assert spectra.passed is False and "geopotential level 500" in spectra.detail and "wavenumber 8" in spectra.detail
    assert _criterion(report, "global-mean temperature level 850 drift").passed is True
    short = stability_report(fc.isel(prediction_timedelta=[0]), truth)
    assert _criterion(short, "spectra within x2").passed is None
    assert "ends at 1 d" in _criterion(short, "spectra within x2").detail
