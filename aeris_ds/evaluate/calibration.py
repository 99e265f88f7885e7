"""Rank histograms (Talagrand diagrams) of an ensemble and scores of their flatness.

The rank of the truth among M members is the number of members below it (0..M); ties are broken at
random, so a member equal to the truth counts as below or above with equal odds. For a calibrated
ensemble every rank is equally likely (a flat histogram); too little spread puts the truth outside the
ensemble (a U shape), too much keeps it in the middle (a dome).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from aeris_ds.evaluate.weights import Weighting, describe_weighting, spatial_mean

MEMBER, RANK = "number", "rank"


def truth_ranks(forecast: xr.DataArray, truth: xr.DataArray, *, seed: int = 0) -> xr.DataArray:
    """Rank of the truth among the members at every point (dims of ``truth``); NaN where any input is."""
    fc = forecast.transpose(*truth.dims, MEMBER)
    x, y = fc.values, truth.values[..., None]
    below, ties = (x < y).sum(-1), (x == y).sum(-1)
    u = np.random.default_rng(seed).random(below.shape)
    rank = (below + np.floor(u * (ties + 1))).astype(float)
    rank[np.isnan(x).any(-1) | np.isnan(y[..., 0])] = np.nan
    return truth.copy(data=rank)


def rank_histogram_per_init(forecast: xr.DataArray, truth: xr.DataArray, *, weighting: Weighting = "area",
                            seed: int = 0) -> xr.DataArray:
    """Area-weighted fraction of points at each rank 0..M, per init time and lead: dims (..., rank)."""
    m = forecast.sizes[MEMBER]
    ranks = truth_ranks(forecast, truth, seed=seed)
    valid = ranks.notnull()
    hist = [spatial_mean((ranks == k).where(valid), weighting) for k in range(m + 1)]
    out = xr.concat(hist, dim=RANK).assign_coords({RANK: np.arange(m + 1)})
    out.attrs = {"definition": f"fraction of grid points where the truth has rank k among M={m} members "
                               f"(members below it, ties at random); spatial mean with "
                               f"{describe_weighting(weighting)}; then mean over init times"}
    return out


def flatness(hist: xr.DataArray) -> xr.Dataset:
    """Deviation of a rank histogram (fractions along ``rank``) from flat.

    ``reliability_index`` = sum_k |f_k - 1/(M+1)| (0 when flat; Delle Monache et al. 2006);
    ``outlier_ratio`` = (f_0 + f_M) / (2/(M+1)): 1 when flat, > 1 a U shape (too little spread),
    < 1 a dome (too much).
    """
    n_bins = hist.sizes[RANK]
    return xr.Dataset({
        "reliability_index": abs(hist - 1 / n_bins).sum(RANK, skipna=False),
        "outlier_ratio": (hist.isel({RANK: 0}, drop=True) + hist.isel({RANK: -1}, drop=True)) * n_bins / 2,
    })


FLATNESS_DEFINITIONS = {
    "rank_reliability_index": "rank histogram reliability index sum_k |f_k - 1/(M+1)| over ranks 0..M "
                              "(0 = flat), of the histogram averaged over init times",
    "rank_outlier_ratio": "(f_0 + f_M) / (2/(M+1)) of the rank histogram averaged over init times: 1 flat, "
                          "> 1 U-shaped (under-dispersive), < 1 dome-shaped (over-dispersive)",
}
