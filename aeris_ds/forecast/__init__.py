"""Ensemble forecasts: autoregressive rollouts streamed to a resumable WeatherBench2-layout zarr."""

from aeris_ds.forecast.rollout import RolloutError, member_generator, rollout
from aeris_ds.forecast.store import ForecastStore

__all__ = ["ForecastStore", "RolloutError", "member_generator", "rollout"]
