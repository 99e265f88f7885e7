"""Projection of gridded fields onto the spherical harmonics of a triangular truncation (T_N: n ≤ N).

Data made by a spectral model at T_N (the embedded Held–Suarez store is T21) carry no power beyond total
wavenumber N; a forecast of them should not either. On a Gaussian grid the projection is exact: for each
zonal wavenumber m ≤ N the span of P_n^m, n = m..N, is (1 − μ²)^{m/2} times the polynomials of degree ≤ N − m
(μ = sin latitude), and Gauss–Legendre quadrature on the grid's latitudes integrates every product of two
such functions (degree ≤ 2N < 2·n_lat) exactly. So the projection is, per m, the orthogonal projector onto
that span in the quadrature inner product — the same field as a spectral model's grid → modal → grid
round trip — and zonal wavenumbers m > N are dropped.

The same orthonormal bases give each total wavenumber (degree) n separately: ``DegreeGains`` scales every
degree of each channel by its own factor (the diffusion's noise coloured like the data's tendencies,
diffusion/colored_noise.py), and ``degree_power`` measures a field's power per degree.
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
                        "truncation needs", every_rank=True)  # every rank shares the grid
    out = np.empty_like(weights)
    out[order] = weights
    return out


def degree_bases(latitude: np.ndarray, truncation: int, where: str = "the grid") -> list[np.ndarray]:
    """For each m ≤ N, [lat, N − m + 1]: column k is P_{m+k}^m on the latitudes times √w (Gauss weights), so the
    columns are orthonormal in the quadrature inner product; a profile f has degree-n coefficient q[:, n − m]·(√w f).

    Gram–Schmidt (QR) of (1 − μ²)^{m/2}·(Legendre polynomials of degree ≤ k) in increasing k: the first k + 1
    columns span degrees m..m + k, so column k is the degree-(m + k) function, normalised, up to its sign.
    """
    weights = gaussian_weights(latitude, where)
    mu = np.sin(np.radians(latitude))
    root_w = np.sqrt(weights)
    bases = []
    for m in range(truncation + 1):
        # Legendre polynomials (not monomials) times (1 − μ²)^{m/2}: the same span, well conditioned
        basis = legendre.legvander(mu, truncation - m) * (1.0 - mu**2)[:, None] ** (m / 2)
        bases.append(np.linalg.qr(root_w[:, None] * basis)[0])
    return bases


def legendre_projectors(latitude: np.ndarray, truncation: int, where: str = "the grid") -> np.ndarray:
    """[N + 1, lat, lat]: for each m ≤ N the matrix projecting a latitude profile onto span{P_n^m, n = m..N}."""
    root_w = np.sqrt(gaussian_weights(latitude, where))
    return np.stack([(q @ q.T) / root_w[:, None] * root_w[None, :] for q in degree_bases(latitude, truncation, where)])


def _check_fits(latitude: np.ndarray, n_lon: int, truncation: int, where: str) -> None:
    if not 0 <= truncation < min(latitude.size, n_lon // 2):
        raise DataError(f"{where}: truncation T{truncation} does not fit a {latitude.size}×{n_lon} grid",
                        every_rank=True)


class DegreeGains:
    """Multiplies degree n ≤ N of channel c by ``gains[c, n]`` and what lies beyond T_N by ``gains[c, N]``, on
    fields ``[..., C, lat, lon]`` (a Gaussian grid, full longitude circle). A symmetric linear map in the
    quadrature inner product; gains of 1 are the identity."""

    def __init__(self, latitude: np.ndarray, n_lon: int, gains: np.ndarray, where: str = "the grid") -> None:
        gains = np.asarray(gains, dtype=np.float64)
        truncation = gains.shape[1] - 1
        _check_fits(latitude, n_lon, truncation, where)
        root_w = np.sqrt(gaussian_weights(latitude, where))
        eye = np.eye(latitude.size)
        mats = np.empty((gains.shape[0], truncation + 1, latitude.size, latitude.size))
        for m, q in enumerate(degree_bases(latitude, truncation, where)):
            for c, g in enumerate(gains):
                inside = (q * g[m:]) @ q.T + g[-1] * (eye - q @ q.T)  # in √w-scaled coordinates
                mats[c, m] = inside / root_w[:, None] * root_w[None, :]
        self.n_lon, self.truncation = n_lon, truncation
        self.mats = torch.from_numpy(mats)
        self.beyond = torch.from_numpy(gains[:, -1].copy())[:, None, None]  # zonal wavenumbers m > N

    def __call__(self, field: torch.Tensor) -> torch.Tensor:
        coeffs = torch.fft.rfft(field.double(), dim=-1)  # [..., C, lat, m]
        n = self.truncation + 1
        low = torch.einsum("cmij,...cjm->...cim", self.mats.to(coeffs), coeffs[..., :n])
        out = torch.cat([low, coeffs[..., n:] * self.beyond.to(coeffs)], dim=-1)
        return torch.fft.irfft(out, n=self.n_lon, dim=-1).to(field.dtype)

    def pixel_variance(self) -> torch.Tensor:
        """[C] the mean variance per grid point of this map applied to unit white noise (exactly: the rfft of
        white noise is white per zonal wavenumber, so E‖y‖² sums the squared Frobenius norms of the maps)."""
        n_lat, n = self.mats.shape[-1], self.truncation + 1
        counts = torch.full((self.n_lon // 2 + 1,), 2.0, dtype=torch.float64)
        counts[0] = 1.0
        if self.n_lon % 2 == 0:
            counts[-1] = 1.0
        low = (self.mats**2).sum((-1, -2)) @ counts[:n]
        high = self.beyond[:, 0, 0] ** 2 * n_lat * counts[n:].sum()
        return (low + high) / (n_lat * self.n_lon)


def degree_power(field: torch.Tensor, latitude: np.ndarray, truncation: int, where: str = "the grid") -> torch.Tensor:
    """[..., N + 1]: the power of ``field [..., lat, lon]`` in each degree n ≤ N (the quadrature's area mean of
    its degree-n part squared, up to one constant factor), summed over m = −n..n."""
    root_w = torch.from_numpy(np.sqrt(gaussian_weights(latitude, where)))
    coeffs = torch.fft.rfft(field.double(), dim=-1) * root_w[:, None]
    power = torch.zeros(*field.shape[:-2], truncation + 1, dtype=torch.float64)
    for m, q in enumerate(degree_bases(latitude, truncation, where)):
        a = torch.einsum("jk,...j->...k", torch.from_numpy(q).to(coeffs), coeffs[..., m])
        power[..., m:] += (1.0 if m == 0 else 2.0) * a.abs() ** 2
    return power


class SpectralTruncation:
    """Projects fields ``[..., lat, lon]`` (a Gaussian grid, full longitude circle) onto T_N."""

    def __init__(self, latitude: np.ndarray, n_lon: int, truncation: int, where: str = "the grid") -> None:
        _check_fits(latitude, n_lon, truncation, where)
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
