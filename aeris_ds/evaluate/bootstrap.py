"""Bootstrap confidence intervals over initial times.

Scores are functions of means over init times of per-init quantities (spatial mean squared error, CRPS,
spread, ...). One resample draws the init times with replacement; its mean of every per-init quantity is
a weighted mean with weights count/n, so all resamples are one matrix product. Every system and metric
uses the same resamples, so a ratio of two systems' scores gets a paired interval.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import xarray as xr

TIME, RESAMPLE, ESTIMATE = "time", "resample", "estimate"
ESTIMATES: tuple[str, ...] = ("value", "lo", "hi")
N_RESAMPLES = 1000
CONFIDENCE = 0.9


def resample_indices(n: int, n_resamples: int = N_RESAMPLES, seed: int = 0) -> np.ndarray:
    """(n_resamples, n) init-time indices drawn with replacement; seeded, so reruns agree."""
    if n < 1:
        raise ValueError("bootstrap needs at least one init time")
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def _resample_weights(indices: np.ndarray) -> xr.DataArray:
    """Weights (resample, time) whose dot product with a per-init quantity is the resample's mean."""
    n_resamples, n = indices.shape
    counts = np.zeros((n_resamples, n))
    np.add.at(counts, (np.arange(n_resamples)[:, None], indices), 1.0)
    return xr.DataArray(counts / n, dims=(RESAMPLE, TIME))


def _time_mean(per_init: xr.DataArray, weights: xr.DataArray | None) -> xr.DataArray:
    # NaN at any init makes every resample NaN (0 × NaN is NaN), like the plain mean: never silently dropped.
    return xr.dot(per_init, weights, dim=TIME) if weights is not None else per_init.mean(TIME, skipna=False)


def bootstrap(per_init: xr.Dataset, statistic: Callable[[xr.Dataset], xr.Dataset], *,
              n_resamples: int = N_RESAMPLES, seed: int = 0, confidence: float = CONFIDENCE,
              indices: np.ndarray | None = None) -> xr.Dataset:
    """``statistic`` of the mean over init times, with a percentile bootstrap interval.

    ``per_init`` holds per-init quantities along ``time``; ``statistic`` maps their time means to scores
    and must broadcast over an extra ``resample`` dim. Returns the scores with an ``estimate`` dim:
    ``value`` (the statistic of the plain means), ``lo`` and ``hi`` (the (1 - confidence)/2 and
    (1 + confidence)/2 quantiles over resamples). Pass ``indices`` to reuse resamples.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if indices is None:
        indices = resample_indices(per_init.sizes[TIME], n_resamples, seed)
    weights = _resample_weights(indices)
    value = statistic(per_init.map(_time_mean, weights=None))
    resampled = statistic(per_init.map(_time_mean, weights=weights))
    tail = (1 - confidence) / 2
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices (undefined scores) stay NaN
        bounds = resampled.quantile([tail, 1 - tail], dim=RESAMPLE, skipna=False)
    bounds = bounds.rename(quantile=ESTIMATE).assign_coords({ESTIMATE: list(ESTIMATES[1:])})
    out = xr.concat([value.expand_dims({ESTIMATE: [ESTIMATES[0]]}), bounds], dim=ESTIMATE,
                    coords="minimal", compat="override")
    out.attrs = dict(value.attrs, bootstrap=(
        f"{ESTIMATES[1]}/{ESTIMATES[2]}: {confidence:.0%} percentile bootstrap interval over "
        f"{indices.shape[1]} init times, {indices.shape[0]} resamples with replacement"))
    return out
