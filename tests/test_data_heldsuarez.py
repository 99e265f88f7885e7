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

CHUNK_DAYS = 10  # one compiled chunk length shared by every test in this module
SPINUP_DAYS = 120


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


@pytest.fixture(scope="module")
def control(model, spun_up):
    """20 days of 6-hourly frames after the spin-up."""
    state, a = model.run_chunk(spun_up)
    _, b = model.run_chunk(state)
    return {k: np.concatenate([a.data[k], b.data[k]]) for k in a.data}


def _gen(path, days_train, days_valid=0.0, days_test=0.0):
    return heldsuarez.generate(path, years_train=days_train / 365, years_valid=days_valid / 365,
                               years_test=days_test / 365, spinup_days=CHUNK_DAYS, seed=1,
                               chunk_days=CHUNK_DAYS, progress=False)


def test_held_generation_writes_valid_store_and_resumes_identically(tmp_path):
    # Uninterrupted: 6 + 2 + 2 days = 40 frames, one chunk after the one-chunk spin-up.
    full = schema.open_store(_gen(tmp_path / "full.zarr", 6, 2, 2)).load()
    schema.validate_store(full, heldsuarez.VARIABLES, heldsuarez.PRESSURE_LEVELS_HPA)
    assert full.sizes == {"time": 40, "level": 3, "latitude": 32, "longitude": 64}
    assert full.attrs["split_train"] == "2001-01-01T00:00:00/2001-01-06T18:00:00"
    assert full.attrs["split_valid"] == "2001-01-07T00:00:00/2001-01-08T18:00:00"
    assert full.attrs["split_test"] == "2001-01-09T00:00:00/2001-01-10T18:00:00"
    assert full.attrs["seed"] == 1 and "Held-Suarez" in full.attrs["title"]
    ps = full["surface_pressure"].values
    assert 9.0e4 < ps.min() and ps.max() < 1.1e5
    assert np.all(full["land_sea_mask"].values == 0)
    # "Killed" after 3 days (mid-chunk), then resumed with the full request.
    part = tmp_path / "part.zarr"
    _gen(part, 3)
    assert schema.open_store(part).sizes["time"] == 12
    resumed = schema.open_store(_gen(part, 6, 2, 2)).load()
    xr.testing.assert_identical(resumed, full)
    with pytest.raises(ValueError, match="seed"):
        heldsuarez.generate(part, years_train=30 / 365, seed=2, spinup_days=CHUNK_DAYS,
                            chunk_days=CHUNK_DAYS, progress=False)


def test_held_climate_has_jets_and_meridional_temperature_gradient(model, control):
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


def test_held_chaos_small_perturbation_grows(model, spun_up, control):
    perturbed = model.perturb_temperature(spun_up, kelvin=1e-2, seed=5)
    state, a = model.run_chunk(perturbed)
    _, b = model.run_chunk(state)
    z500 = heldsuarez.PRESSURE_LEVELS_HPA.index(500)
    perturbed_z = np.concatenate([a.data["geopotential"], b.data["geopotential"]])[:, z500]
    diff = perturbed_z - control["geopotential"][:, z500]
    rmse = np.sqrt((diff.astype(np.float64) ** 2).mean(axis=(1, 2)))
    assert rmse[0] > 0
    assert rmse[-1] >= 10 * rmse[0], f"z500 RMSE grew only {rmse[-1] / rmse[0]:.1f}x in 20 days"
