"""Evaluation: WeatherBench2 metrics, persistence/climatology baselines, scorecard and plots."""

from aeris_ds.evaluate.baselines import (
    align_truth,
    climatology_forecast,
    climatology_from_store,
    compute_climatology,
    persistence,
)
from aeris_ds.evaluate.metrics import (
    acc,
    bias,
    crps,
    mae,
    rmse,
    spread,
    spread_skill_ratio,
    zonal_power_spectrum,
)
from aeris_ds.evaluate.weights import latitude_weights, spatial_mean

__all__ = [
    "acc", "align_truth", "bias", "climatology_forecast", "climatology_from_store", "compute_climatology",
    "crps", "latitude_weights", "mae", "persistence", "rmse", "spatial_mean", "spread", "spread_skill_ratio",
    "zonal_power_spectrum",
]
