"""TOA solar radiation against textbook values (daily means and the subsolar peak)."""

import numpy as np

from aeris_ds.data.solar import SOLAR_CONSTANT, toa_incident_solar_radiation


def _day(date: str) -> np.ndarray:
    start = np.datetime64(f"{date}T00:00")
    return np.arange(start, start + np.timedelta64(1, "D"), np.timedelta64(10, "m"))


def test_data_solar_daily_mean_equator_equinox():
    # S0/π at the equator on the equinox (distance factor ~1.007 in late March): ~436 W m-2.
    flux = toa_incident_solar_radiation(_day("2023-03-21"), [0.0], np.arange(0, 360, 45.0))
    assert 433 < flux.mean() < 440


def test_data_solar_daily_mean_north_pole_solstice():
    # Polar day: S0·(r0/r)²·sin(23.44°) = 1361·0.967·0.398 ≈ 524 W m-2, constant over the day.
    flux = toa_incident_solar_radiation(_day("2023-06-21"), [90.0], [0.0])
    assert 520 < flux.mean() < 526
    assert flux.std() < 1.0
    assert toa_incident_solar_radiation(_day("2023-06-21"), [-90.0], [0.0]).max() == 0.0


def test_data_solar_subsolar_peak_and_position():
    lat, lon = np.arange(-30, 30.01, 0.25), np.arange(0, 360, 0.25)
    # Perihelion (Jan 3): (r0/r)² = 1/0.98329² = 1.0343; aphelion (Jul 4): 1/1.01671² = 0.9674.
    peri = toa_incident_solar_radiation(np.datetime64("2023-01-03T12"), lat, lon).max()
    aph = toa_incident_solar_radiation(np.datetime64("2023-07-04T12"), lat, lon).max()
    np.testing.assert_allclose(peri, SOLAR_CONSTANT * 1.0343, rtol=2e-3)
    np.testing.assert_allclose(aph, SOLAR_CONSTANT * 0.9674, rtol=2e-3)
    # March equinox 12 UTC: the equation of time is ≈ -7.5 min, so the subsolar point is ≈ 1.9°E.
    field = toa_incident_solar_radiation(np.datetime64("2023-03-20T12"), lat, lon)[0]
    i, j = np.unravel_index(field.argmax(), field.shape)
    assert abs(lat[i]) < 0.6 and abs(lon[j] - 1.9) < 0.6
    # Night side is dark.
    assert field[:, np.searchsorted(lon, 180.0)].max() == 0.0


def test_data_solar_hourly_integral_matches_fine_mean():
    t = np.datetime64("2023-05-10T09:00")
    lat, lon = np.array([-40.0, 10.0, 60.0]), np.array([0.0, 100.0, 250.0])
    fine = np.arange(t - np.timedelta64(3600, "s"), t, np.timedelta64(10, "s")) + np.timedelta64(5, "s")
    expected = toa_incident_solar_radiation(fine, lat, lon).astype(np.float64).mean(axis=0) * 3600.0
    got = toa_incident_solar_radiation(t, lat, lon, integrated=True)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=50.0)
    assert got.max() > 1e6  # J m-2 over an hour of daylight, not W m-2
