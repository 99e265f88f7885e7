"""Spectral truncation: a T21 field passes unchanged, anything beyond T21 (grid-scale noise) is removed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.polynomial import legendre
from scipy.special import sph_harm_y

from aeris_ds.errors import DataError
from aeris_ds.forecast.spectral import SpectralTruncation

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
