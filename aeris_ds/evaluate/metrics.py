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


def _mse(forecast: T, truth: T, weighting: Weighting) -> T:
    return spatial_mean((ensemble_mean(forecast) - truth) ** 2, weighting)


def _acc(mean: T, truth: T, climatology: T, weighting: Weighting) -> T:
    """Per-init ACC of an ensemble mean (anomalies not re-centred)."""
    fa, ta = mean - climatology, truth - climatology
    return spatial_mean(fa * ta, weighting) / np.sqrt(spatial_mean(fa**2, weighting) * spatial_mean(ta**2, weighting))


def _variance(forecast: T, weighting: Weighting) -> T:
    m = _n_members(forecast)
    if m < 2:
        raise ValueError(f"spread needs an ensemble of at least 2 members along '{MEMBER}', got {m}")
    return spatial_mean(forecast.var(MEMBER, ddof=1, skipna=False), weighting)


def definition(metric: str, n_members: int, weighting: Weighting = "area",
               aggregation: Aggregation = "sqrt_before_time_mean", member: int | None = None) -> str:
    """What a metric's number is, in words (stored with every score)."""
    w, m = describe_weighting(weighting), n_members
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    spread_text = (f"ensemble spread over M={m} members: sqrt of the spatial mean of the member variance (ddof=1)"
                   + (f" times sqrt((M+1)/M) = {np.sqrt((m + 1) / m):.4f}" if metric.endswith("_corrected")
                      else " without the finite-ensemble factor (as in WB2 plots)")
                   + f"; spatial mean with {w}; {_AGGREGATION_TEXT[aggregation]}")
    texts = {
        "rmse": f"RMSE of the ensemble mean over {m} member(s); spatial mean with {w}; "
                f"{_AGGREGATION_TEXT[aggregation]}",
        "bias": f"bias = mean of (ensemble mean - truth) over {m} member(s); spatial mean with {w}; "
                "then mean over init times",
        "acc": "ACC of the ensemble mean: anomalies vs climatology at the valid time (not re-centred), "
               f"<f'y'>/sqrt(<f'^2><y'^2>) with <.> the spatial mean using {w}; per init time, then mean "
               "over init times",
        "crps": f"fair CRPS over {m} member(s): mean_i|Xi-y| - sum_ij|Xi-Xj|/(2M(M-1)) (= MAE for M=1); "
                f"spatial mean with {w}; then mean over init times",
        "mae": f"MAE of {'the ensemble mean' if member is None else f'member index {member}'}; spatial mean "
               f"with {w}; then mean over init times",
        "spread": spread_text,
        "spread_corrected": spread_text,
        "spread_skill": f"spread/skill ratio = [{spread_text}] / [RMSE of the ensemble mean, same weighting "
                        "and aggregation]",
    }
    texts["spread_skill_corrected"] = texts["spread_skill"]
    if metric not in texts:
        raise ValueError(f"no definition for metric {metric!r}; known: {sorted(texts)}")
    return texts[metric]


def rmse(forecast: T, truth: T, *, weighting: Weighting = "area",
         aggregation: Aggregation = "sqrt_before_time_mean") -> T:
    """Latitude-weighted RMSE of the ensemble mean (WB2 headline aggregation by default)."""
    return _labelled(_aggregate_sqrt(_mse(forecast, truth, weighting), aggregation),
                     definition("rmse", _n_members(forecast), weighting, aggregation))


def bias(forecast: T, truth: T, *, weighting: Weighting = "area") -> T:
    """Mean error of the ensemble mean (forecast - truth), spatially weighted, averaged over init times."""
    err = spatial_mean(ensemble_mean(forecast) - truth, weighting).mean(TIME, skipna=False)
    return _labelled(err, definition("bias", _n_members(forecast), weighting))


def acc(forecast: T, truth: T, climatology: T, *, weighting: Weighting = "area") -> T:
    """Anomaly correlation of the ensemble mean against ``climatology`` at the valid times (WB2 ACC).

    ``climatology`` must broadcast against ``truth`` (e.g. the climatology baseline without ``number``).
    Anomalies are not re-centred: ACC = <f'y'> / sqrt(<f'^2><y'^2>) with <.> the weighted spatial mean,
    computed per init time and then averaged over init times. A forecast equal to climatology gives NaN.
    """
    per_time = _acc(ensemble_mean(forecast), truth, climatology, weighting)
    return _labelled(per_time.mean(TIME, skipna=False), definition("acc", _n_members(forecast), weighting))


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
    return _labelled(score, definition("crps", _n_members(forecast), weighting))


def mae(forecast: T, truth: T, *, member: int | None = None, weighting: Weighting = "area") -> T:
    """Weighted MAE of the ensemble mean (``member=None``) or of one member (deterministic skill)."""
    fc = ensemble_mean(forecast) if member is None or MEMBER not in forecast.dims else forecast.isel(
        {MEMBER: member}, drop=True)
    score = spatial_mean(abs(fc - truth), weighting).mean(TIME, skipna=False)
    return _labelled(score, definition("mae", _n_members(forecast), weighting, member=member))


def spread(forecast: T, *, weighting: Weighting = "area", aggregation: Aggregation = "sqrt_before_time_mean",
           finite_ensemble_correction: bool = False) -> T:
    """Ensemble spread, aggregated over time like :func:`rmse` so that the two are comparable."""
    m = _n_members(forecast)
    result = _aggregate_sqrt(_variance(forecast, weighting), aggregation)
    if finite_ensemble_correction:
        result = result * np.sqrt((m + 1) / m)
    name = "spread_corrected" if finite_ensemble_correction else "spread"
    return _labelled(result, definition(name, m, weighting, aggregation))


def spread_skill_ratio(forecast: T, truth: T, *, weighting: Weighting = "area",
                       aggregation: Aggregation = "sqrt_before_time_mean",
                       finite_ensemble_correction: bool = False) -> T:
    """Spread / ensemble-mean RMSE with the same weighting and aggregation; 1 means calibrated spread."""
    ratio = spread(forecast, weighting=weighting, aggregation=aggregation,
                   finite_ensemble_correction=finite_ensemble_correction) / rmse(
        forecast, truth, weighting=weighting, aggregation=aggregation)
    name = "spread_skill_corrected" if finite_ensemble_correction else "spread_skill"
    return _labelled(ratio, definition(name, _n_members(forecast), weighting, aggregation))


def per_init_components(forecast: xr.DataArray, truth: xr.DataArray, climatology: xr.DataArray, *,
                        weighting: Weighting = "area") -> xr.Dataset:
    """The per-init-time spatial means every score aggregates (for bootstrapping over init times).

    Dims (time, prediction_timedelta, [level]): ``mse``, ``rmse`` (its square root), ``error``, ``abs_error``
    (of the ensemble mean), ``abs_error_member0``, ``acc``, ``crps`` (fair), and for M >= 2 members
    ``variance`` (member variance, ddof=1) and ``spread`` (its square root); NaN for one member.
    """
    mean = ensemble_mean(forecast)
    err = mean - truth
    first = forecast.isel({MEMBER: 0}, drop=True) if MEMBER in forecast.dims else forecast
    parts = {"mse": spatial_mean(err**2, weighting)}
    parts |= {"rmse": np.sqrt(parts["mse"]), "error": spatial_mean(err, weighting),
              "abs_error": spatial_mean(abs(err), weighting),
              "abs_error_member0": spatial_mean(abs(first - truth), weighting),
              "acc": _acc(mean, truth, climatology, weighting),
              "crps": spatial_mean(fair_crps_pointwise(forecast, truth), weighting)}
    if _n_members(forecast) >= 2:
        parts["variance"] = _variance(forecast, weighting)
    else:
        parts["variance"] = xr.full_like(parts["mse"], np.nan)
    parts["spread"] = np.sqrt(parts["variance"])
    return xr.Dataset({k: v.drop_attrs() for k, v in parts.items()})


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
