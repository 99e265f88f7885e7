"""Projection of gridded fields onto the spherical harmonics of a triangular truncation (T_N: n ≤ N).

Data made by a spectral model at T_N (the embedded Held–Suarez store is T21) carry no power beyond total
wavenumber N; a forecast of them should not either. On a Gaussian grid the projection is exact: for each
zonal wavenumber m ≤ N the span of P_n^m, n = m..N, is (1 − μ²)^{m/2} times the polynomials of degree ≤ N − m
(μ = sin latitude), and Gauss–Legendre quadrature on the grid's latitudes integrates every product of two
such functions (degree ≤ 2N < 2·n_lat) exactly. So the projection is, per m, the orthogonal projector onto
that span in the quadrature inner product — the same field as a spectral model's grid → modal → grid
round trip — and zonal wavenumbers m > N are dropped.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.polynomial import legendre

from aeris_ds.errors import DataError


def gaussian_weights(latitude: np.ndarray, where: str = "the grid") -> np.ndarray:
    """Gauss–Legendre weights of ``latitude`` (degrees, either order); DataError if they are not Gaussian."""
    nodes, weights = legendre.leggauss(latitude.size)
    order = np.argsort(latitude)
    mu = np.sin(np.radians(latitude[order]))
    if not np.allclose(mu, nodes, atol=1e-5):
        raise DataError(f"{where}: latitudes are not the {latitude.size} Gaussian latitudes a spectral "
                        "truncation needs")
    out = np.empty_like(weights)
    out[order] = weights
    return out


def legendre_projectors(latitude: np.ndarray, truncation: int, where: str = "the grid") -> np.ndarray:
    """[N + 1, lat, lat]: for each m ≤ N the matrix projecting a latitude profile onto span{P_n^m, n = m..N}."""
    weights = gaussian_weights(latitude, where)
    mu = np.sin(np.radians(latitude))
    root_w = np.sqrt(weights)
    out = np.zeros((truncation + 1, mu.size, mu.size))
    for m in range(truncation + 1):
        # Legendre polynomials (not monomials) times (1 − μ²)^{m/2}: the same span, well conditioned
        basis = legendre.legvander(mu, truncation - m) * (1.0 - mu**2)[:, None] ** (m / 2)
        q, _ = np.linalg.qr(root_w[:, None] * basis)  # orthonormal in the quadrature inner product
        out[m] = (q @ q.T) / root_w[:, None] * root_w[None, :]
    return out


class SpectralTruncation:
    """Projects fields ``[..., lat, lon]`` (a Gaussian grid, full longitude circle) onto T_N."""

    def __init__(self, latitude: np.ndarray, n_lon: int, truncation: int, where: str = "the grid") -> None:
        if not 0 <= truncation < min(latitude.size, n_lon // 2):
            raise DataError(f"{where}: truncation T{truncation} does not fit a {latitude.size}×{n_lon} grid")
        self.n_lon, self.truncation = n_lon, truncation
        self.projectors = torch.from_numpy(legendre_projectors(latitude, truncation, where))
        self.cos_lat = torch.from_numpy(np.cos(np.radians(latitude)))[:, None]

    def __call__(self, field: torch.Tensor) -> torch.Tensor:
        coeffs = torch.fft.rfft(field.double(), dim=-1)[..., : self.truncation + 1]  # [..., lat, m]
        kept = torch.einsum("mij,...jm->...im", self.projectors.to(coeffs), coeffs)
        return torch.fft.irfft(kept, n=self.n_lon, dim=-1).to(field.dtype)

    def fields(self, grid: torch.Tensor, wind: torch.Tensor) -> torch.Tensor:
        """``grid [..., C, lat, lon]`` in physical units, channels where ``wind [C]`` is true projected as
        u·cos φ: a spectral model's truncation bounds u·cos φ and v·cos φ, u itself carries a 1/cos φ."""
        scale = torch.where(wind[:, None, None], self.cos_lat, torch.ones_like(self.cos_lat)).to(grid)
        return self(grid * scale) / scale
