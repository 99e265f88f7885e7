"""Spectral truncation: a T21 field passes unchanged, anything beyond T21 (grid-scale noise) is removed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.polynomial import legendre
from scipy.special import sph_harm_y

from aeris_ds.errors import DataError
from aeris_ds.spectral import SpectralTruncation

N_LAT, N_LON, T = 32, 64, 21
LAT = np.degrees(np.arcsin(legendre.leggauss(N_LAT)[0]))  # the T21 Gaussian grid, south to north
LON = np.arange(N_LON) * 2 * np.pi / N_LON


def harmonic(n: int, m: int) -> np.ndarray:
    """Real part of Y_n^m on the grid (scipy's spherical harmonics: an independent reference)."""
    polar = np.radians(90.0 - LAT)[:, None]
    return sph_harm_y(n, m, polar, LON[None, :]).real


def test_t21_field_passes_unchanged():
    rng = np.random.default_rng(0)
    field = sum(rng.normal() * harmonic(n, m) for n in range(T + 1) for m in range(0, n + 1, 3))
    out = SpectralTruncation(LAT, N_LON, T)(torch.from_numpy(field[None]))[0].numpy()
    np.testing.assert_allclose(out, field, atol=1e-10 * np.abs(field).max())


@pytest.mark.parametrize("n,m", [(22, 0), (22, 5), (25, 20), (30, 30)])
def test_harmonics_beyond_truncation_are_removed(n, m):
    out = SpectralTruncation(LAT, N_LON, T)(torch.from_numpy(harmonic(n, m)))
    assert float(out.abs().max()) < 1e-10


def test_grid_scale_noise_is_removed_and_the_rest_kept():
    noise = torch.from_numpy(np.random.default_rng(1).normal(size=(3, N_LAT, N_LON)))
    project = SpectralTruncation(LAT, N_LON, T)
    kept = project(noise)
    assert float(torch.fft.rfft(kept, dim=-1)[..., T + 1:].abs().max()) < 1e-10  # zonal k > 21 gone
    # what is removed is orthogonal (area-weighted) to every retained harmonic; the projection is idempotent
    weights = legendre.leggauss(N_LAT)[1][:, None]
    removed = (noise - kept).numpy()
    for n, m in [(0, 0), (5, 3), (21, 0), (21, 21), (13, 7)]:
        assert abs((weights * removed * harmonic(n, m)).sum(axis=(-1, -2))).max() < 1e-10
    np.testing.assert_allclose(project(kept).numpy(), kept.numpy(), atol=1e-12)
    assert 0.15 < float((kept**2).mean() / (noise**2).mean()) < 0.35  # ~(22·23/2·2)/(32·64) of white noise


def test_non_gaussian_latitudes_are_refused():
    with pytest.raises(DataError, match="Gaussian latitudes"):
        SpectralTruncation(np.linspace(-87.2, 87.2, N_LAT), N_LON, T, where="store.zarr")


def test_winds_are_projected_as_u_cos_latitude():
    """A spectral model's T21 bounds u·cos φ: such a wind passes unchanged, a scalar projection would not."""
    rng = np.random.default_rng(2)
    u_cos = sum(rng.normal() * harmonic(n, m) for n in range(1, T + 1) for m in range(0, n + 1, 4))
    cos = np.cos(np.radians(LAT))[:, None]
    grid = torch.from_numpy(np.stack([u_cos / cos, u_cos]))  # channels: a wind, a scalar
    project = SpectralTruncation(LAT, N_LON, T)
    out = project.fields(grid, torch.tensor([True, False])).numpy()
    np.testing.assert_allclose(out, grid.numpy(), atol=1e-9 * np.abs(grid.numpy()).max())
    as_scalar = project.fields(grid, torch.tensor([False, False])).numpy()[0]
    assert np.abs(as_scalar - grid.numpy()[0]).max() > 1e-3 * np.abs(grid.numpy()[0]).max()


def test_forecast_step_is_projected_onto_the_store_truncation(tmp_path):
    """sampler.project: a forecast step equals the unprojected step's fields, projected (winds as u·cos φ)."""
    from aeris_ds.config import SamplerConfig, load_config
    from aeris_ds.data.schema import write_store
    from aeris_ds.data.source import WeatherSource
    from aeris_ds.data.stats import compute_stats, save_stats
    from aeris_ds.data.synthetic import synthetic_dataset
    from aeris_ds.forecast.driver import Forecaster
    from aeris_ds.forecast.rollout import member_generator
    from aeris_ds.model.swin_dit import single_process_model
    from aeris_ds.weights import canonical, save_weights

    truncation, n_lat, n_lon = 10, 16, 32
    lat = np.degrees(np.arcsin(legendre.leggauss(n_lat)[0]))
    ds = synthetic_dataset(lat, np.arange(n_lon) * 360.0 / n_lon, days=8)
    store = write_store(ds.assign_attrs(spectral_truncation=truncation), tmp_path / "gauss.zarr")
    cfg = load_config("tiny", {"data": {"store": str(store)}})
    save_stats(compute_stats(WeatherSource(store, cfg.data, "train"), progress=False), store)
    model, _ = single_process_model(cfg, lat)
    torch.manual_seed(0)
    params = {canonical(n): p.detach() + 0.05 * torch.randn_like(p) for n, p in model.named_parameters()}
    weights = save_weights({"params": params, "ema": params}, tmp_path / "weights.pt",
                           {"config": cfg.model_dump(mode="json")})

    def step(project: bool) -> tuple[Forecaster, dict[str, np.ndarray]]:
        fc = Forecaster(weights, store, SamplerConfig(steps=2, sigma_max=5.0, sigma_min=0.1, project=project))
        i = int(np.flatnonzero(fc.source.times == np.datetime64(ds.attrs["split_test"].split("/")[0]))[0])
        state = fc.initial_state(i)[None]
        gens = [member_generator(0, fc.source.times[i], 0, 1)]
        with torch.no_grad():
            return fc, fc.to_physical(fc.step(state, gens, np.array([fc.source.times[i] + fc.lead])))

    _, raw = step(False)
    fc, projected = step(True)
    assert fc.truncation is not None and fc.truncation.truncation == truncation
    for name in ("geopotential", "u_component_of_wind", "2m_temperature"):
        wind = torch.tensor([name.startswith("u_")] * (raw[name].ndim - 2))
        field = torch.from_numpy(raw[name].astype(np.float64)).reshape(-1, 1, n_lat, n_lon)
        expected = fc.truncation.fields(field, wind[:1]).reshape(raw[name].shape).numpy()
        np.testing.assert_allclose(projected[name], expected, rtol=1e-5, atol=1e-4 * np.abs(expected).std(),
                                   err_msg=name)
        beyond = np.abs(np.fft.rfft(raw[name], axis=-1)[..., truncation + 1:]).max()
        assert beyond > 1e-3 * np.abs(raw[name]).std(), f"{name}: the unprojected step has no small scales to remove"
