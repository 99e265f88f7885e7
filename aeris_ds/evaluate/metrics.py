"""WeatherBench2-style scores for ensemble forecasts in the WB2 forecast layout.

Inputs: ``forecast`` with dims (time = init time, prediction_timedelta, [number], [level], latitude,
longitude) and ``truth`` already aligned to it (same dims without ``number``; see
:func:`aeris_ds.evaluate.baselines.align_truth`). A forecast without ``number`` is a one-member ensemble.
Outputs keep (prediction_timedelta, [level]) per variable and carry ``attrs["definition"]`` saying what was
computed, because RMSE, spread and CRPS each have several published variants that differ in the digits.
"""

from __future__ import annotations

from typing import Literal, TypeVar

import numpy as np
import xarray as xr

from aeris_ds.evaluate.weights import Weighting, describe_weighting, latitude_weights, spatial_mean

T = TypeVar("T", xr.Dataset, xr.DataArray)
Aggregation = Literal["sqrt_before_time_mean", "sqrt_of_time_mean"]
AGGREGATIONS: tuple[str, ...] = ("sqrt_before_time_mean", "sqrt_of_time_mean")
TIME, MEMBER, LONGITUDE = "time", "number", "longitude"

_AGGREGATION_TEXT = {
    "sqrt_before_time_mean": "square root of the spatial mean per init time, then mean over init times "
    "(WB2 headline)",
    "sqrt_of_time_mean": "square root of the mean over init times of the spatial mean",
}


def _labelled(result: T, definition: str) -> T:
    """Replace inherited attrs (units no longer apply to e.g. ACC) by the score's definition."""
    result.attrs = {"definition": definition}
    if isinstance(result, xr.Dataset):
        for name in result.data_vars:
            result[name].attrs = {"definition": definition}
    return result


def _n_members(forecast: xr.Dataset | xr.DataArray) -> int:
    return forecast.sizes.get(MEMBER, 1)


def ensemble_mean(forecast: T) -> T:
    """Ensemble mean over ``number`` (identity for deterministic forecasts)."""
    return forecast.mean(MEMBER, skipna=False) if MEMBER in forecast.dims else forecast


def _aggregate_sqrt(per_time_mean_square: T, aggregation: str) -> T:
    """Turn per-init-time spatial mean squares into a root score with the chosen time aggregation."""
    if aggregation == "sqrt_before_time_mean":
        return np.sqrt(per_time_mean_square).mean(TIME, skipna=False)
    if aggregation == "sqrt_of_time_mean":
        return np.sqrt(per_time_mean_square.mean(TIME, skipna=False))
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")


def rmse(forecast: T, truth: T, *, weighting: Weighting = "area",
         aggregation: Aggregation = "sqrt_before_time_mean") -> T:
    """Latitude-weighted RMSE of the ensemble mean (WB2 headline aggregation by default)."""
    mse = spatial_mean((ensemble_mean(forecast) - truth) ** 2, weighting)
    return _labelled(_aggregate_sqrt(mse, aggregation),
                     f"RMSE of the ensemble mean over {_n_members(forecast)} member(s); spatial mean with "
                     f"{describe_weighting(weighting)}; {_AGGREGATION_TEXT[aggregation]}")


def bias(forecast: T, truth: T, *, weighting: Weighting = "area") -> T:
    """Mean error of the ensemble mean (forecast - truth), spatially weighted, averaged over init times."""
    err = spatial_mean(ensemble_mean(forecast) - truth, weighting).mean(TIME, skipna=False)
    return _labelled(err, f"bias = mean of (ensemble mean - truth) over {_n_members(forecast)} member(s); "
                          f"spatial mean with {describe_weighting(weighting)}; then mean over init times")


def acc(forecast: T, truth: T, climatology: T, *, weighting: Weighting = "area") -> T:
    """Anomaly correlation of the ensemble mean against ``climatology`` at the valid times (WB2 ACC).

    ``climatology`` must broadcast against ``truth`` (e.g. the climatology baseline without ``number``).
    Anomalies are not re-centred: ACC = <f'y'> / sqrt(<f'^2><y'^2>) with <.> the weighted spatial mean,
    computed per init time and then averaged over init times. A forecast equal to climatology gives NaN.
    """
    fa = ensemble_mean(forecast) - climatology
    ta = truth - climatology
    per_time = spatial_mean(fa * ta, weighting) / np.sqrt(
        spatial_mean(fa**2, weighting) * spatial_mean(ta**2, weighting))
    return _labelled(per_time.mean(TIME, skipna=False),
                     "ACC of the ensemble mean: anomalies vs climatology at the valid time (not re-centred),"
                     " <f'y'>/sqrt(<f'^2><y'^2>) with <.> the spatial mean using "
                     f"{describe_weighting(weighting)}; per init time, then mean over init times")


def fair_crps_pointwise(forecast: T, truth: T) -> T:
    """Fair CRPS per point: mean|Xi-y| - 1/(2M(M-1)) sum_ij |Xi-Xj|; reduces to |X-y| for M = 1.

    The double sum uses the sorted-member identity sum_ij |Xi-Xj| = 2 sum_k (2k-M-1) X_(k), O(M log M).
    """
    if MEMBER not in forecast.dims:
        return abs(forecast - truth)
    m = forecast.sizes[MEMBER]
    skill = abs(forecast - truth).mean(MEMBER, skipna=False)
    if m < 2:
        return skill
    coef = xr.DataArray(2 * np.arange(1, m + 1) - m - 1, dims=MEMBER)
    ordered = xr.apply_ufunc(np.sort, forecast, input_core_dims=[[MEMBER]], output_core_dims=[[MEMBER]],
                             kwargs={"axis": -1})
    pair_sum = 2 * (coef * ordered).sum(MEMBER, skipna=False)
    return skill - pair_sum / (2 * m * (m - 1))


def crps(forecast: T, truth: T, *, weighting: Weighting = "area") -> T:
    """Fair (unbiased in ensemble size) CRPS, spatially weighted, averaged over init times (WB2 CRPS)."""
    score = spatial_mean(fair_crps_pointwise(forecast, truth), weighting).mean(TIME, skipna=False)
    return _labelled(score, f"fair CRPS over {_n_members(forecast)} member(s): mean_i|Xi-y| - "
                            "sum_ij|Xi-Xj|/(2M(M-1)) (= MAE for M=1); spatial mean with "
                            f"{describe_weighting(weighting)}; then mean over init times")


def mae(forecast: T, truth: T, *, member: int | None = None, weighting: Weighting = "area") -> T:
    """Weighted MAE of the ensemble mean (``member=None``) or of one member (deterministic skill)."""
    fc = ensemble_mean(forecast) if member is None or MEMBER not in forecast.dims else forecast.isel(
        {MEMBER: member}, drop=True)
    what = "the ensemble mean" if member is None else f"member index {member}"
    score = spatial_mean(abs(fc - truth), weighting).mean(TIME, skipna=False)
    return _labelled(score, f"MAE of {what}; spatial mean with {describe_weighting(weighting)}; "
                            "then mean over init times")


def _spread_definition(m: int, weighting: str, aggregation: str, corrected: bool) -> str:
    factor = f" times sqrt((M+1)/M) = {np.sqrt((m + 1) / m):.4f}" if corrected else \
        " without the finite-ensemble factor (as in WB2 plots)"
    return (f"ensemble spread over M={m} members: sqrt of the spatial mean of the member variance (ddof=1)"
            f"{factor}; spatial mean with {describe_weighting(weighting)}; {_AGGREGATION_TEXT[aggregation]}")


def spread(forecast: T, *, weighting: Weighting = "area", aggregation: Aggregation = "sqrt_before_time_mean",
           finite_ensemble_correction: bool = False) -> T:
    """Ensemble spread, aggregated over time like :func:`rmse` so that the two are comparable."""
    m = _n_members(forecast)
    if m < 2:
        raise ValueError(f"spread needs an ensemble of at least 2 members along '{MEMBER}', got {m}")
    var = spatial_mean(forecast.var(MEMBER, ddof=1, skipna=False), weighting)
    result = _aggregate_sqrt(var, aggregation)
    if finite_ensemble_correction:
        result = result * np.sqrt((m + 1) / m)
    return _labelled(result, _spread_definition(m, weighting, aggregation, finite_ensemble_correction))


def spread_skill_ratio(forecast: T, truth: T, *, weighting: Weighting = "area",
                       aggregation: Aggregation = "sqrt_before_time_mean",
                       finite_ensemble_correction: bool = False) -> T:
    """Spread / ensemble-mean RMSE with the same weighting and aggregation; 1 means calibrated spread."""
    ratio = spread(forecast, weighting=weighting, aggregation=aggregation,
                   finite_ensemble_correction=finite_ensemble_correction) / rmse(
        forecast, truth, weighting=weighting, aggregation=aggregation)
    spread_text = _spread_definition(_n_members(forecast), weighting, aggregation, finite_ensemble_correction)
    return _labelled(ratio, f"spread/skill ratio = [{spread_text}] / [RMSE of the ensemble mean, same "
                            "weighting and aggregation]")


def zonal_power_spectrum(field: T, *, weighting: Weighting = "area",
                         lat_band: tuple[float, float] | None = None,
                         mean_dims: tuple[str, ...] = (TIME, MEMBER)) -> T:
    """Zonal power spectrum by zonal wavenumber, latitude-weighted over a band (default global).

    Per latitude row, P_k = c_k |rfft_k(x)|^2 / N^2 with c_k = 2 except at k = 0 and the Nyquist
    wavenumber, so sum_k P_k equals the zonal mean of x^2 (Parseval) and sum_{k>=1} P_k the zonal variance.
    Rows are then averaged with latitude weights, and ``mean_dims`` present (init time, member) averaged.
    """
    weights = latitude_weights(field["latitude"], weighting)  # on the full grid: band edges stay true
    if lat_band is not None:
        lo, hi = sorted(lat_band)
        rows = (field.latitude >= lo) & (field.latitude <= hi)
        if int(rows.sum()) < 1:
            raise ValueError(f"latitude band {lat_band} holds no latitude rows")
        field, weights = field.sel(latitude=rows), weights.sel(latitude=rows.values)
    n = field.sizes[LONGITUDE]
    k = np.arange(n // 2 + 1)
    factor = np.where((k == 0) | ((n % 2 == 0) & (k == n // 2)), 1.0, 2.0)
    power = xr.apply_ufunc(lambda a: np.abs(np.fft.rfft(a, axis=-1)) ** 2 / n**2, field,
                           input_core_dims=[[LONGITUDE]], output_core_dims=[["wavenumber"]])
    power = (power * xr.DataArray(factor, dims="wavenumber")).assign_coords(wavenumber=k)
    power = (power * weights).sum("latitude", skipna=False) / weights.sum()
    power = power.mean([d for d in mean_dims if d in power.dims], skipna=False)
    band = "global" if lat_band is None else f"latitudes {lat_band[0]}..{lat_band[1]}"
    return _labelled(power, "zonal power spectrum: |rfft along longitude|^2/N^2, doubled except k=0 and "
                            f"Nyquist (sums to the zonal mean square); {band} mean with "
                            f"{describe_weighting(weighting)}; averaged over "
                            f"{[d for d in mean_dims if d in field.dims]}")
