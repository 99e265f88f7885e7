"""Held–Suarez embedded dataset: valid store, resume == uninterrupted, climate and chaos checks."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("dinosaur")
# Reuse XLA compilations across test sessions (compiling the dycore costs ~15 s per chunk length).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path.home() / ".cache" / "aeris-ds-tests" / "jax"))

from aeris_ds.data import heldsuarez, schema  # noqa: E402

# One compiled chunk length shared by every test in this module (the generation test uses it too), short
# so the generation/resume test runs a few days only.
CHUNK_DAYS = 2
# Measured from rest (T21, seed 0): jets and the temperature gradient build up axisymmetrically over ~40 days,
# baroclinic eddies appear ~day 50 and saturate ~day 75 (z500 zonal-anomaly std ~5 → ~650 m²/s²). 70 days
# puts the 20-day control window (days 70–90) in the eddying regime; the climate test asserts the eddies.
SPINUP_DAYS = 70


def test_held_import_does_not_load_jax():
    code = "import sys, aeris_ds.data.heldsuarez; assert 'jax' not in sys.modules, 'jax imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture(scope="module")
def model():
    return heldsuarez.get_model("T21", CHUNK_DAYS * 4)


@pytest.fixture(scope="module")
def spun_up(model):
    state = model.initial_state(seed=0)
    for _ in range(SPINUP_DAYS // CHUNK_DAYS):
        state, _ = model.run_chunk(state)
    return state


def _run(model, state, days: int) -> dict[str, np.ndarray]:
    """6-hourly frames of ``days`` days from ``state``."""
    frames = []
    for _ in range(days // CHUNK_DAYS):
        state, f = model.run_chunk(state)
        frames.append(f.data)
    return {k: np.concatenate([f[k] for f in frames]) for k in frames[0]}


@pytest.fixture(scope="module")
def control(model, spun_up):
    """20 days of 6-hourly frames after the spin-up."""
    return _run(model, spun_up, 20)


def _gen(path, days_train, days_valid=0.0, days_test=0.0):
    """A store after a one-chunk spin-up (the store's content is not what these tests check)."""
    return heldsuarez.generate(path, years_train=days_train / 365, years_valid=days_valid / 365,
                               years_test=days_test / 365, spinup_days=CHUNK_DAYS, seed=1,
                               chunk_days=CHUNK_DAYS, progress=False)


def test_held_generation_writes_valid_store_and_resumes_identically(tmp_path):
    # Uninterrupted: 4 + 1 + 1 days = 24 frames = 3 chunks after the one-chunk spin-up.
    full = schema.open_store(_gen(tmp_path / "full.zarr", 4, 1, 1)).load()
    schema.validate_store(full, heldsuarez.VARIABLES, heldsuarez.PRESSURE_LEVELS_HPA)
    assert full.sizes == {"time": 24, "level": 3, "latitude": 32, "longitude": 64}
    assert full.attrs["split_train"] == "2001-01-01T00:00:00/2001-01-04T18:00:00"
    assert full.attrs["split_valid"] == "2001-01-05T00:00:00/2001-01-05T18:00:00"
    assert full.attrs["split_test"] == "2001-01-06T00:00:00/2001-01-06T18:00:00"
    assert full.attrs["seed"] == 1 and "Held-Suarez" in full.attrs["title"]
    assert full.attrs["spectral_truncation"] == 21  # T21: what sampler.project and the stability report read
    ps = full["surface_pressure"].values
    assert 9.0e4 < ps.min() and ps.max() < 1.1e5
    assert np.all(full["land_sea_mask"].values == 0)
    # "Killed" after 3 days (mid-way through the second chunk), then resumed with the full request.
    part = tmp_path / "part.zarr"
    _gen(part, 3)
    assert schema.open_store(part).sizes["time"] == 12
    resumed = schema.open_store(_gen(part, 4, 1, 1)).load()
    xr.testing.assert_identical(resumed, full)
    with pytest.raises(ValueError, match="seed"):
        heldsuarez.generate(part, years_train=30 / 365, seed=2, spinup_days=CHUNK_DAYS,
                            chunk_days=CHUNK_DAYS, progress=False)


def test_held_climate_has_jets_eddies_and_meridional_temperature_gradient(model, control):
    lat = model.latitude
    u = control["u_component_of_wind"].mean(axis=(0, 3))  # time and zonal mean: (level, lat)
    temp = control["temperature"].mean(axis=(0, 3))
    i250, i850 = heldsuarez.PRESSURE_LEVELS_HPA.index(250), heldsuarez.PRESSURE_LEVELS_HPA.index(850)
    for hemisphere in (lat > 0, lat < 0):
        jet = u[i250][hemisphere]
        assert jet.max() > 15.0, f"no upper-level westerly jet: max {jet.max():.1f} m/s"
        assert 20 < abs(lat[hemisphere][jet.argmax()]) < 60
        tropics, polar = np.abs(lat) < 15, np.abs(lat) > 70
        assert temp[i850][tropics & hemisphere].mean() - temp[i850][polar & hemisphere].mean() > 20.0
    # Baroclinic eddies: z500 departs from its zonal mean by far more than in the axisymmetric spin-up (~5–30).
    z500 = control["geopotential"][:, heldsuarez.PRESSURE_LEVELS_HPA.index(500)]
    eddy = (z500 - z500.mean(axis=-1, keepdims=True)).std()
    assert eddy > 200.0, f"no baroclinic eddies: z500 zonal-anomaly std {eddy:.0f} m2/s2"


def test_held_chaos_small_perturbation_grows(model, spun_up, control):
    perturbed = model.perturb_temperature(spun_up, kelvin=1e-2, seed=5)
    z500 = heldsuarez.PRESSURE_LEVELS_HPA.index(500)
    perturbed_z = _run(model, perturbed, 20)["geopotential"][:, z500]
    diff = perturbed_z - control["geopotential"][:, z500]
    rmse = np.sqrt((diff.astype(np.float64) ** 2).mean(axis=(1, 2)))
    assert rmse[0] > 0
    assert rmse[-1] >= 10 * rmse[0], f"z500 RMSE grew only {rmse[-1] / rmse[0]:.1f}x in 20 days"
