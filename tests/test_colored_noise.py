"""diffusion.noise_spectrum: per-degree gains against scipy's spherical harmonics, the colour of the noise, and
training with coloured noise on two ranks as on one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.polynomial import legendre
from ranks import run_ranks
from scipy.special import sph_harm_y

from aeris_ds.diffusion.colored_noise import NoiseColoring, noise_gains
from aeris_ds.spectral import DegreeGains, degree_power

N_LAT, N_LON, T = 32, 64, 21
LAT = np.degrees(np.arcsin(legendre.leggauss(N_LAT)[0]))
LON = np.arange(N_LON) * 2 * np.pi / N_LON


def harmonic(n: int, m: int, part: str = "real") -> np.ndarray:
    """Real or imaginary part of Y_n^m on the grid (scipy: an independent reference)."""
    y = sph_harm_y(n, m, np.radians(90.0 - LAT)[:, None], LON[None, :])
    return y.real if part == "real" else y.imag


@pytest.mark.parametrize("n,m", [(0, 0), (5, 3), (13, 0), (21, 21), (17, 9), (25, 4)])
def test_each_degree_is_scaled_by_its_own_gain(n, m):
    gains = np.random.default_rng(0).uniform(0.1, 2.0, size=(2, T + 1))
    field = torch.from_numpy(np.stack([harmonic(n, m)] * 2))
    out = DegreeGains(LAT, N_LON, gains)(field).numpy()
    want = gains[:, min(n, T), None, None] * field.numpy()  # beyond T21: the last degree's gain
    np.testing.assert_allclose(out, want, atol=1e-12)


def test_degree_power_finds_the_degree_and_nothing_beyond_the_truncation():
    power = degree_power(torch.from_numpy(np.stack([harmonic(7, 2), harmonic(25, 3)])), LAT, T)
    assert int(power[0].argmax()) == 7 and float(power[0].sum() - power[0, 7]) < 1e-20 * float(power[0, 7]) + 1e-12
    assert float(power[1].sum()) < 1e-20


def test_coloured_noise_has_unit_variance_and_the_spectrum_of_its_gains():
    gains = np.stack([np.linspace(1.0, 0.05, T + 1), np.ones(T + 1)])
    color = NoiseColoring(LAT, N_LON, gains)
    white = torch.from_numpy(np.random.default_rng(1).normal(size=(600, 2, N_LAT, N_LON)))
    noise = color(white)
    np.testing.assert_allclose(noise.var(dim=(0, 2, 3)).numpy(), [1.0, 1.0], rtol=0.02)
    np.testing.assert_allclose(color(torch.from_numpy(harmonic(4, 1)[None].repeat(2, 0)))[1].numpy(), harmonic(4, 1),
                               atol=1e-9, err_msg="gains of 1 are the identity (up to the unit-variance factor 1)")
    per_mode = degree_power(noise, LAT, T).mean(0).numpy() / (2 * np.arange(T + 1) + 1)
    shape = per_mode[0] / per_mode[1]  # the white channel's power per mode is the grid's own reference
    want = gains[0] ** 2 / (gains[0] ** 2 * per_mode[1]).sum() * per_mode[1].sum()
    np.testing.assert_allclose(shape[2:] / shape[2:].mean(), want[2:] / want[2:].mean(), rtol=0.12)


def test_gains_recover_the_spectrum_of_the_tendencies():
    """Fields with power per mode s_n (random harmonics): gains ∝ s_n^(γ/2), largest 1; γ = 0 is white."""
    rng = np.random.default_rng(2)
    s = 1.0 / (1.0 + np.arange(T + 1)) ** 3
    basis = [(n, m, part) for n in range(1, T + 1) for m in range(n + 1) for part in ("real", "imag")[:1 + (m > 0)]]
    harmonics = np.stack([harmonic(*b) for b in basis])
    norm = np.array([(1.0 if m == 0 else 0.5) for _, m, _ in basis])  # Re and Im of Y_n^m, m > 0: half the power
    amplitude = np.sqrt([s[n] for n, _, _ in basis] / norm)  # 2n + 1 real modes of power s_n in degree n
    fields = np.einsum("kh,hyx->kyx", rng.normal(size=(400, len(basis))) * amplitude, harmonics)[:, None]
    gains = noise_gains(fields, LAT, T, exponent=1.0)[0]
    np.testing.assert_allclose(gains[1:], np.sqrt(s[1:] / s[1]), rtol=0.1)
    assert gains.max() == 1.0
    np.testing.assert_allclose(noise_gains(fields, LAT, T, exponent=0.0), 1.0)


def test_noise_spectrum_is_for_the_diffusion_objective_only():
    from pydantic import ValidationError

    from aeris_ds.config import DiffusionConfig

    with pytest.raises(ValidationError, match="noise_spectrum colours the diffusion's noise"):
        DiffusionConfig(noise_spectrum=1.0, objective="consistency")


def _gauss_store(tmp) -> str:
    from aeris_ds.config import load_config
    from aeris_ds.data.schema import write_store
    from aeris_ds.data.source import WeatherSource
    from aeris_ds.data.stats import compute_stats, save_stats
    from aeris_ds.data.synthetic import synthetic_dataset

    lat = np.degrees(np.arcsin(legendre.leggauss(16)[0]))
    ds = synthetic_dataset(lat, np.arange(32) * 360.0 / 32, days=8)
    store = write_store(ds.assign_attrs(spectral_truncation=10), tmp / "gauss.zarr")
    cfg = load_config("tiny", {"data": {"store": str(store)}})
    save_stats(compute_stats(WeatherSource(store, cfg.data, "train"), progress=False), store)
    return str(store)


def _train(store: str, out: str, runs: list[tuple]) -> dict:
    from test_swipe_layouts import _ds_config

    from aeris_ds.config import load_config
    from aeris_ds.train import run

    results = {}
    for name, layout in runs:
        cfg = load_config("tiny", {"data": {"store": store}, "layout": layout, "diffusion": {"noise_spectrum": 1.0},
                                   "train": {"out_dir": f"{out}/{name}"}})
        summary = run(cfg, _ds_config(layout.get("dp", 1)))
        results[name] = [(r["loss"], r["grad_norm"]) for r in summary["history"]]
    return results


def test_coloured_training_on_two_window_ranks_is_one_process_and_forecasts_in_colour(tmp_path):
    """WP=2 colours each rank's block of the whole field's noise: the same losses, gradient norms and weights as
    one process; the weights carry the gains, which a forecast's noise then follows."""
    from aeris_ds.config import SamplerConfig
    from aeris_ds.data.source import WeatherSource
    from aeris_ds.errors import CheckpointError
    from aeris_ds.forecast.driver import Forecaster
    from aeris_ds.weights import load_weights, save_weights

    store = _gauss_store(tmp_path)
    (one,) = run_ranks(1, _train, store, str(tmp_path), [("one", {})], tmp=tmp_path / "r1")
    two = run_ranks(2, _train, store, str(tmp_path), [("wp2", {"wp": 2})], tmp=tmp_path / "r2")[0]
    np.testing.assert_allclose(np.array(two["wp2"]), np.array(one["one"]), rtol=1e-5)
    saved = load_weights(tmp_path / "one" / "weights.pt")
    for key, value in saved["params"].items():
        torch.testing.assert_close(load_weights(tmp_path / "wp2" / "weights.pt")["params"][key], value,
                                   rtol=1e-5, atol=1e-6)

    # the saved gains are the training tendencies' spectrum, measured here independently of TrainingExamples
    from aeris_ds.config import ExperimentConfig
    from aeris_ds.data.stats import load_stats

    cfg = ExperimentConfig(**saved["meta"]["config"])
    src = WeatherSource(store, cfg.data, "train")
    tend_std = load_stats(store, cfg.data.channel_names, cfg.data.lead_hours).arrays()[2]
    every = np.arange(len(src.lat)), np.arange(len(src.lon))
    starts = [src.time_index(int(s)) for s in np.linspace(0, src.n_samples - 1, min(128, src.n_samples)).round()]
    tendencies = np.stack([(src.read(t + src.lead_steps, *every) - src.read(t, *every)) / tend_std[:, None, None]
                           for t in starts])
    gains = np.array(saved["meta"]["noise_gains"])
    np.testing.assert_allclose(gains, noise_gains(tendencies, src.lat, 10, 1.0), rtol=1e-6)
    assert gains.min() < 0.3, "the synthetic tendencies' spectrum should not be white"

    fc = Forecaster(tmp_path / "one" / "weights.pt", store, SamplerConfig(steps=2, sigma_max=5.0, sigma_min=0.1))
    white = torch.randn(400, fc.ids.size, cfg.data.n_channels, dtype=torch.float64)
    per_mode = degree_power(fc._grid(fc._colored(white)), src.lat, 10).mean(0).numpy() / (2 * np.arange(11) + 1)
    ratio = per_mode / gains**2  # white noise's power per mode is nearly flat across degrees on this grid
    spread = ratio[:, 1:].max(axis=1) / ratio[:, 1:].min(axis=1)
    assert spread.max() < 1.5, f"the forecast's noise does not follow the gains (token order?): {spread}"

    del saved["meta"]["noise_gains"]
    save_weights({k: saved[k] for k in ("params", "ema")}, tmp_path / "bare.pt", saved["meta"])
    with pytest.raises(CheckpointError, match="holds no noise_gains"):
        Forecaster(tmp_path / "bare.pt", store)


def test_a_grid_without_gaussian_latitudes_is_one_error_for_all_ranks():
    """Every rank shares the grid, so the error is printed once (by rank 0), naming the store and the option."""
    from aeris_ds.errors import DataError

    where = "store.zarr (diffusion.noise_spectrum)"
    with pytest.raises(DataError, match=r"store.zarr \(diffusion.noise_spectrum\): latitudes are not the 32") as err:
        NoiseColoring(np.linspace(-87.2, 87.2, N_LAT), N_LON, np.ones((1, T + 1)), where)
    assert err.value.every_rank
