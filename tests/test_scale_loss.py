"""The per-scale loss weights (diffusion.scale_weights): Parseval, an independent Haar reference, any layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aeris_ds.config import load_config
from aeris_ds.diffusion.objective import scale_weighted_mse, token_loss, weighted_mse
from aeris_ds.parallel.layout import WindowGrid

LAT, LON, WIN, C = 16, 32, (8, 8), 3


def _field(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prediction, target [C, lat, lon] with power at every scale, and weights [lat, C] (latitude × channel)."""
    rng = np.random.default_rng(seed)
    pred, target = rng.standard_normal((2, C, LAT, LON))
    lat_w = np.cos(np.deg2rad(np.linspace(-80, 80, LAT)))
    return pred, target, lat_w[:, None] * np.array([1.0, 2.0, 0.5])[None, :]


def _tokens(grid: np.ndarray, ids: np.ndarray) -> torch.Tensor:
    """[C, lat, lon] → [1, T, C] in the order of grid ids ``ids``."""
    return torch.from_numpy(grid.reshape(grid.shape[0], -1)[:, ids].T[None].copy())


def _weights(w: np.ndarray, ids: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(w[ids // LON][None].copy())


def _haar_reference(err: np.ndarray, scale_weights: list[float]) -> float:
    """Σ_l λ_l·‖a_{l−1} − up(a_l)‖²·4^(l−1) + the coarse energy, window by window on the lat-lon grid."""
    total = 0.0
    for r in range(0, LAT, WIN[0]):
        for c in range(0, LON, WIN[1]):
            a = err[:, r:r + WIN[0], c:c + WIN[1]]
            for level, lam in enumerate(scale_weights, start=1):
                coarse = a.reshape(C, a.shape[1] // 2, 2, a.shape[2] // 2, 2).mean(axis=(2, 4))
                up = np.repeat(np.repeat(coarse, 2, axis=1), 2, axis=2)
                total += lam * 4 ** (level - 1) * ((a - up) ** 2).sum()
                a = coarse
            total += 4 ** len(scale_weights) * (a**2).sum()
    return total


def test_unit_weights_are_the_plain_loss() -> None:
    pred, target, w = _field(0)
    ids = WindowGrid(LAT, LON, WIN).home_ids(0, 0)
    labels = (_tokens(target, ids), _weights(w, ids))
    plain = weighted_mse(_tokens(pred, ids), labels)
    split = scale_weighted_mse(_tokens(pred, ids), labels, WIN, [1.0, 1.0, 1.0])
    torch.testing.assert_close(split, plain, rtol=1e-6, atol=0)


@pytest.mark.parametrize("scale_weights", [[4.0], [4.0, 2.0], [0.25, 0.5, 2.0], [0.0, 0.0, 0.0]])
def test_matches_an_independent_haar_split(scale_weights: list[float]) -> None:
    pred, target, w = _field(1)
    ids = WindowGrid(LAT, LON, WIN).home_ids(0, 0)
    ours = scale_weighted_mse(_tokens(pred, ids), (_tokens(target, ids), _weights(w, ids)), WIN, scale_weights)
    err = np.sqrt(w.T[:, :, None]) * (pred - target)
    assert float(ours) == pytest.approx(_haar_reference(err, scale_weights), rel=1e-6)  # the loss runs in float32


def test_weights_move_the_loss_the_right_way() -> None:
    """A pixel-scale error costs more with the finest scale up-weighted; a window-wide offset does not move
    (with uniform weights: √w varying with latitude would give the offset some detail)."""
    _, target, _ = _field(2)
    w = np.ones((LAT, C))
    checker = np.indices((LAT, LON)).sum(axis=0) % 2 * 2.0 - 1.0  # all power at the 2-pixel scale
    ids = WindowGrid(LAT, LON, WIN).home_ids(0, 0)
    labels = (_tokens(target, ids), _weights(w, ids))
    for error, ratio in ((checker, 4.0), (np.ones((LAT, LON)), 1.0)):
        pred = _tokens(target + 0.1 * error[None], ids)
        assert float(scale_weighted_mse(pred, labels, WIN, [4.0]) / weighted_mse(pred, labels)) == pytest.approx(ratio)


@pytest.mark.parametrize("wp,sp", [(2, 1), (4, 1), (2, 2), (1, 2)])
def test_the_ranks_losses_add_up_to_one_process(wp: int, sp: int) -> None:
    """Each rank's home tokens (window-major, its rows of each window) give its share of the whole loss."""
    pred, target, w = _field(3)
    cfg = load_config("tiny", {"model": {"window": list(WIN)}, "grid": {"lat": LAT, "lon": LON},
                               "diffusion": {"scale_weights": [3.0, 0.5]}, "layout": {"wp": wp, "sp": sp}})
    loss = token_loss(cfg)
    whole_ids = WindowGrid(LAT, LON, WIN).home_ids(0, 0)
    whole = scale_weighted_mse(_tokens(pred, whole_ids), (_tokens(target, whole_ids), _weights(w, whole_ids)),
                               WIN, [3.0, 0.5])
    grid = WindowGrid(LAT, LON, WIN, wp=wp, sp=sp)
    parts = [loss(_tokens(pred, ids), (_tokens(target, ids), _weights(w, ids)))
             for ids in (grid.home_ids(r, s) for r in range(wp) for s in range(sp))]
    torch.testing.assert_close(sum(parts), whole, rtol=1e-6, atol=0)


def test_a_layout_that_cuts_the_blocks_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="scale_weights has 3 levels"):
        load_config("tiny", {"model": {"window": [8, 8]}, "grid": {"lat": 16, "lon": 32},
                             "diffusion": {"scale_weights": [2.0, 1.0, 1.0]}, "layout": {"sp": 2}})
