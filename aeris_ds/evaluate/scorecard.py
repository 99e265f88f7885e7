"""Scorecard: every metric for the forecast and both baselines with bootstrap intervals over init times,
written as JSON, CSV and a table.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from aeris_ds.evaluate import metrics
from aeris_ds.evaluate.baselines import align_truth, climatology_forecast, persistence
from aeris_ds.evaluate.bootstrap import CONFIDENCE, ESTIMATE, N_RESAMPLES, bootstrap, resample_indices
from aeris_ds.evaluate.calibration import FLATNESS_DEFINITIONS, RANK, flatness, rank_histogram_per_init
from aeris_ds.evaluate.stability import StabilityReport
from aeris_ds.evaluate.weights import Weighting, check_weighting

SYSTEMS: tuple[str, ...] = ("forecast", "persistence", "climatology")
METRICS: tuple[str, ...] = ("rmse", "rmse_sqrt_of_time_mean", "acc", "bias", "crps", "mae_ensemble_mean",
                            "mae_member0", "spread", "spread_skill", "spread_skill_corrected",
                            "rmse_ratio_persistence", "rmse_ratio_climatology", "crps_ratio_mae",
                            "rank_reliability_index", "rank_outlier_ratio")
ENSEMBLE_ONLY = ("spread", "spread_skill", "spread_skill_corrected", *FLATNESS_DEFINITIONS)
LEAD, LEVEL, TIME, MEMBER = "prediction_timedelta", "level", "time", "number"


def _subset(ds: xr.Dataset, variables: list[str], levels: list[float] | None) -> xr.Dataset:
    ds = ds[variables]
    if levels is not None and LEVEL in ds.dims:
        missing = sorted(set(levels) - set(ds[LEVEL].values.tolist()))
        if missing:
            raise KeyError(f"levels {missing} not found; available: {ds[LEVEL].values.tolist()}")
        ds = ds.sel({LEVEL: levels})
    return ds


def _check_variables(variables: list[str], **datasets: xr.Dataset) -> None:
    for name, ds in datasets.items():
        missing = [v for v in variables if v not in ds.data_vars]
        if missing:
            raise KeyError(f"{name} lacks variables {missing}; it has {sorted(ds.data_vars)}")


def _ratio(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
    """a / b, NaN where b is 0 (e.g. persistence at lead 0)."""
    return a / b.where(b != 0)


def _metrics_of_means(c: xr.Dataset, n_members: int) -> xr.DataArray:
    """Every metric from the init-time means of the per-init components (dims system, [resample], ...)."""
    rmse = c["rmse"]
    factor = xr.DataArray([np.sqrt((n_members + 1) / n_members) if n_members > 1 else np.nan, np.nan, np.nan],
                          dims="system", coords={"system": list(SYSTEMS)})
    values = {
        "rmse": rmse, "rmse_sqrt_of_time_mean": np.sqrt(c["mse"]), "acc": c["acc"], "bias": c["error"],
        "crps": c["crps"], "mae_ensemble_mean": c["abs_error"], "mae_member0": c["abs_error_member0"],
        "spread": c["spread"], "spread_skill": _ratio(c["spread"], rmse),
        "spread_skill_corrected": _ratio(c["spread"], rmse) * factor,
        "rmse_ratio_persistence": _ratio(rmse, rmse.sel(system="persistence", drop=True)),
        "rmse_ratio_climatology": _ratio(rmse, rmse.sel(system="climatology", drop=True)),
        "crps_ratio_mae": _ratio(c["crps"], c["abs_error"]),
    }
    flat = flatness(c["rank_histogram"])
    forecast_only = xr.DataArray([1.0, np.nan, np.nan], dims="system", coords={"system": list(SYSTEMS)})
    values["rank_reliability_index"] = flat["reliability_index"] * forecast_only
    values["rank_outlier_ratio"] = flat["outlier_ratio"] * forecast_only
    return xr.concat([values[m].transpose("system", ...) for m in METRICS], pd.Index(METRICS, name="metric"),
                     coords="minimal", compat="override")


def _definitions(n_members: int, weighting: Weighting) -> dict[str, dict[str, str]]:
    """What each (system, metric) number is; one-member baselines have no spread or rank histogram."""
    d = metrics.definition
    out = {}
    for system in SYSTEMS:
        m = n_members if system == "forecast" else 1
        rmse = d("rmse", m, weighting)
        texts = {"rmse": rmse, "rmse_sqrt_of_time_mean": d("rmse", m, weighting, "sqrt_of_time_mean"),
                 "acc": d("acc", m, weighting), "bias": d("bias", m, weighting), "crps": d("crps", m, weighting),
                 "mae_ensemble_mean": d("mae", m, weighting), "mae_member0": d("mae", m, weighting, member=0),
                 "rmse_ratio_persistence": f"[{rmse}] / [the same for persistence, same init times]",
                 "rmse_ratio_climatology": f"[{rmse}] / [the same for climatology, same init times]",
                 "crps_ratio_mae": "fair CRPS / MAE of the ensemble mean, each averaged over init times "
                                   "(< 1: the members add skill beyond their mean)"}
        for name in ENSEMBLE_ONLY:
            texts[name] = (FLATNESS_DEFINITIONS.get(name) or d(name, m, weighting)) if m > 1 else \
                "undefined for a one-member forecast"
        out[system] = {name: texts[name] for name in METRICS}
    return out


def _rank_histogram(fc: xr.DataArray, truth: xr.DataArray, weighting: Weighting) -> xr.DataArray:
    if fc.sizes.get(MEMBER, 1) >= 2:
        return rank_histogram_per_init(fc, truth, weighting=weighting)
    return xr.full_like(truth.isel(latitude=0, longitude=0, drop=True), np.nan).expand_dims({RANK: [0, 1]})


def score(forecast: xr.Dataset, truth: xr.Dataset, climatology: xr.Dataset, *,
          variables: list[str] | None = None, levels: list[float] | None = None,
          weighting: Weighting = "area", n_resamples: int = N_RESAMPLES, seed: int = 0,
          confidence: float = CONFIDENCE) -> xr.Dataset:
    """Score the forecast, persistence and climatology against ``truth`` (default ``"area"`` weights).

    ``truth`` is a time series covering every init and valid time; ``climatology`` has dims
    (dayofyear, hour, ...). Returns per variable dims (system, metric, estimate, prediction_timedelta,
    [level]), ``estimate`` being the score (``value``) and its bootstrap interval over init times (``lo``,
    ``hi``; all metrics and systems share the resamples). ``attrs["definitions"][system][metric]`` says
    exactly what each number is. The rank histograms themselves: :func:`rank_histograms`.
    """
    check_weighting(weighting)
    variables = list(variables) if variables else sorted(str(v) for v in forecast.data_vars)
    _check_variables(variables, forecast=forecast, truth=truth, climatology=climatology)
    forecast = _subset(forecast, variables, levels).load()
    truth = _subset(truth, variables, levels)
    climatology = _subset(climatology, variables, levels)
    aligned = align_truth(truth, forecast).load()
    clim_fc = climatology_forecast(climatology, forecast).load()
    systems = {"forecast": forecast, "climatology": clim_fc,
               "persistence": persistence(truth, forecast[TIME].values, forecast[LEAD].values).load()}
    clim_at_valid = clim_fc.isel({MEMBER: 0}, drop=True)
    n_members = forecast.sizes.get(MEMBER, 1)
    indices = resample_indices(forecast.sizes[TIME], n_resamples, seed)
    out = {}
    for name in variables:
        per_init = xr.concat([metrics.per_init_components(systems[s][name], aligned[name], clim_at_valid[name],
                                                          weighting=weighting) for s in SYSTEMS],
                             pd.Index(SYSTEMS, name="system"), coords="minimal", compat="override")
        per_init["rank_histogram"] = _rank_histogram(forecast[name], aligned[name], weighting)
        out[name] = bootstrap(per_init, lambda c: _metrics_of_means(c, n_members), indices=indices,
                              confidence=confidence).transpose("system", "metric", ESTIMATE, LEAD, ...)
    scores = xr.Dataset(out)
    scores = scores.drop_vars([c for c in scores.coords if c not in scores.dims])
    scores.attrs = {"weighting": weighting, "definitions": _definitions(n_members, weighting),
                    "n_init_times": forecast.sizes[TIME], "n_members": n_members,
                    "bootstrap": out[variables[0]].attrs["bootstrap"]}
    return scores


def rank_histograms(forecast: xr.Dataset, truth: xr.Dataset, *, weighting: Weighting = "area",
                    n_resamples: int = N_RESAMPLES, seed: int = 0, confidence: float = CONFIDENCE) -> xr.Dataset:
    """Rank histograms per variable, dims (estimate, prediction_timedelta, [level], rank), with bootstrap
    intervals over init times (the same resamples as :func:`score` for the same seed and init times)."""
    forecast = forecast.load()
    aligned = align_truth(truth[list(forecast.data_vars)], forecast).load()
    indices = resample_indices(forecast.sizes[TIME], n_resamples, seed)
    out, definition = {}, ""
    for name in forecast.data_vars:
        hist = rank_histogram_per_init(forecast[name], aligned[name], weighting=weighting)
        out[name] = bootstrap(xr.Dataset({"h": hist}), lambda c: c["h"], indices=indices, confidence=confidence)
        definition = hist.attrs["definition"]
    ds = xr.Dataset(out)
    ds.attrs = {"definition": definition, "bootstrap": next(iter(out.values())).attrs["bootstrap"]}
    return ds


def _frame(ds: xr.Dataset) -> pd.DataFrame:
    """Long table, one row per coordinate combination except ``estimate`` (value, lo, hi columns); lead in h."""
    frames = []
    for name, da in ds.data_vars.items():
        df = da.to_dataset(ESTIMATE).to_dataframe().reset_index()
        df["variable"] = name
        if LEVEL not in df:
            df[LEVEL] = np.nan
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out["lead_hours"] = out.pop(LEAD) / pd.Timedelta(hours=1)
    keys = [c for c in ("system", "metric", "variable", LEVEL, "lead_hours", RANK) if c in out]
    return out[keys + ["value", "lo", "hi"]]


def scores_to_frame(scores: xr.Dataset) -> pd.DataFrame:
    """Long table: one row per (system, metric, variable, level, lead), lead in hours, value and interval."""
    return _frame(scores)


# (header, system, metric, with its interval)
_TABLE_COLUMNS = (("RMSE", "forecast", "rmse", False), ("RMSE/pers", "forecast", "rmse_ratio_persistence", True),
                  ("RMSE/clim", "forecast", "rmse_ratio_climatology", True), ("ACC", "forecast", "acc", False),
                  ("CRPS", "forecast", "crps", True), ("CRPS/MAE", "forecast", "crps_ratio_mae", True),
                  ("SSR", "forecast", "spread_skill", True), ("SSR corr", "forecast", "spread_skill_corrected", True),
                  ("rank U", "forecast", "rank_outlier_ratio", True))


def _table_rows(scores: xr.Dataset) -> tuple[list[str], list[list[str]]]:
    """One row per (variable, level, lead): columns from the long frame (xarray selections per cell are slow)."""
    frame = scores_to_frame(scores).sort_values(["variable", LEVEL, "lead_hours"], kind="stable")
    header = ["variable", "level", "lead h"] + [c[0] for c in _TABLE_COLUMNS]
    columns = []
    for _, system, metric, interval in _TABLE_COLUMNS:
        sub = frame[(frame["system"] == system) & (frame["metric"] == metric)]
        columns.append([f"{v:.4g} [{lo:.3g}, {hi:.3g}]" if interval else f"{v:.4g}"
                        for v, lo, hi in zip(sub["value"], sub["lo"], sub["hi"], strict=True)])
    keys = frame[(frame["system"] == "forecast") & (frame["metric"] == "rmse")]
    first = [[str(v), "" if np.isnan(lv) else f"{lv:g}", f"{h:g}"]
             for v, lv, h in zip(keys["variable"], keys[LEVEL], keys["lead_hours"], strict=True)]
    return header, [row + [col[i] for col in columns] for i, row in enumerate(first)]


def _legend(scores: xr.Dataset) -> str:
    return (f"(weighting: {scores.attrs['weighting']}; {scores.attrs['n_init_times']} init times, "
            f"{scores.attrs['n_members']} members; value [lo, hi]: {scores.attrs['bootstrap']}; "
            "SSR corr = SSR x sqrt((M+1)/M); rank U = rank-histogram outlier ratio, 1 flat, > 1 U-shaped; "
            "definitions in scores.json)\n")


def format_table(scores: xr.Dataset) -> str:
    """Plain-text headline table (forecast vs baselines), also saved next to the JSON."""
    header, rows = _table_rows(scores)
    widths = [max(len(c) for c in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n" + _legend(scores)


def _print_table(scores: xr.Dataset) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(format_table(scores))
        return
    header, rows = _table_rows(scores)
    table = Table(*header, title="aeris-ds scorecard", caption=_legend(scores))
    for row in rows:
        table.add_row(*row)
    Console(width=250).print(table)


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON-ready dicts, with NaN/inf written as null."""
    return [{k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in rec.items()}
            for rec in frame.to_dict(orient="records")]


def write_scorecard(scores: xr.Dataset, out_dir: str | Path, *, stability: StabilityReport | None = None,
                    rank_histogram: xr.Dataset | None = None) -> dict[str, Path]:
    """Write scores.json (values, intervals, definitions, stability, rank histograms), scores.csv and
    rank_histogram.csv (long tables) and scorecard.txt; print the table."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = scores_to_frame(scores)
    paths = {"json": out / "scores.json", "csv": out / "scores.csv", "table": out / "scorecard.txt"}
    frame.to_csv(paths["csv"], index=False)
    doc = {key: scores.attrs[key] for key in ("weighting", "n_init_times", "n_members", "bootstrap",
                                              "definitions")}
    if "partial" in scores.attrs:  # an incomplete forecast scored on its completed lead times
        doc["partial"] = scores.attrs["partial"]
    doc["scores"] = _records(frame)
    lines = []
    if stability is not None:
        diag = stability.diagnostics.to_dataframe().reset_index()
        diag["lead_hours"] = diag.pop(LEAD) / pd.Timedelta(hours=1)
        doc["stability"] = {"definition": stability.diagnostics.attrs["definition"], "passed": stability.passed,
                            "criteria": [asdict(c) for c in stability.criteria], "flags": stability.flags,
                            "diagnostics": _records(diag)}
        lines = ["", "stability: " + ("PASS" if stability.passed else "FAIL"),
                 *(c.line() for c in stability.criteria), *(f"FLAG {f}" for f in stability.flags)]
    if rank_histogram is not None:
        ranks = _frame(rank_histogram)
        paths["rank_csv"] = out / "rank_histogram.csv"
        ranks.to_csv(paths["rank_csv"], index=False)
        doc["rank_histogram"] = {"definition": rank_histogram.attrs["definition"], "csv": paths["rank_csv"].name}
    paths["json"].write_text(json.dumps(doc, indent=1, default=str))
    partial = f"{scores.attrs['partial']}\n" if "partial" in scores.attrs else ""
    paths["table"].write_text(partial + format_table(scores) + "".join(line + "\n" for line in lines))
    _print_table(scores)
    for line in lines:
        print(line)
    return paths
