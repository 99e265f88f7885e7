"""Scorecard: every metric for the forecast and both baselines, written as JSON, CSV and a table.

Also a stability report for long rollouts, which catches the two failure modes of autoregressive
diffusion models that headline scores average away: blow-up (growing variance, NaN) and smoothing
(loss of small-scale power).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from aeris_ds.evaluate import metrics
from aeris_ds.evaluate.baselines import align_truth, climatology_forecast, persistence
from aeris_ds.evaluate.weights import Weighting, check_weighting, spatial_mean

SYSTEMS: tuple[str, ...] = ("forecast", "persistence", "climatology")
METRICS: tuple[str, ...] = ("rmse", "rmse_sqrt_of_time_mean", "acc", "bias", "crps", "mae_ensemble_mean",
                            "mae_member0", "spread", "spread_skill", "spread_skill_corrected")
BLOW_UP_STD_RATIO = 1.5
SMOOTHING_POWER_RATIO = 0.5
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


def _system_scores(fc: xr.Dataset, truth: xr.Dataset, clim: xr.Dataset,
                   weighting: Weighting) -> tuple[xr.Dataset, dict[str, str]]:
    """All metrics for one system, stacked along a ``metric`` dim, plus their definitions."""
    kw = {"weighting": weighting}
    results = {
        "rmse": metrics.rmse(fc, truth, **kw),
        "rmse_sqrt_of_time_mean": metrics.rmse(fc, truth, aggregation="sqrt_of_time_mean", **kw),
        "acc": metrics.acc(fc, truth, clim, **kw),
        "bias": metrics.bias(fc, truth, **kw),
        "crps": metrics.crps(fc, truth, **kw),
        "mae_ensemble_mean": metrics.mae(fc, truth, **kw),
        "mae_member0": metrics.mae(fc, truth, member=0, **kw),
    }
    if fc.sizes.get(MEMBER, 1) >= 2:
        results["spread"] = metrics.spread(fc, **kw)
        results["spread_skill"] = metrics.spread_skill_ratio(fc, truth, **kw)
        results["spread_skill_corrected"] = metrics.spread_skill_ratio(
            fc, truth, finite_ensemble_correction=True, **kw)
    else:
        nan = xr.full_like(results["rmse"], np.nan)
        nan.attrs = {"definition": "undefined for a one-member forecast"}
        results.update(spread=nan, spread_skill=nan, spread_skill_corrected=nan)
    definitions = {name: r.attrs["definition"] for name, r in results.items()}
    stacked = xr.concat([results[m] for m in METRICS], pd.Index(METRICS, name="metric"),
                        coords="minimal", compat="override")
    return stacked, definitions


def score(forecast: xr.Dataset, truth: xr.Dataset, climatology: xr.Dataset, *,
          variables: list[str] | None = None, levels: list[float] | None = None,
          weighting: Weighting = "area") -> xr.Dataset:
    """Score the forecast, persistence and climatology against ``truth`` (default ``"area"`` weights).

    ``truth`` is a time series covering every init and valid time; ``climatology`` has dims
    (dayofyear, hour, ...). Returns per variable dims (system, metric, prediction_timedelta, [level]);
    ``attrs["definitions"][system][metric]`` says exactly what each number is.
    """
    check_weighting(weighting)
    variables = list(variables) if variables else sorted(str(v) for v in forecast.data_vars)
    _check_variables(variables, forecast=forecast, truth=truth, climatology=climatology)
    forecast = _subset(forecast, variables, levels)
    truth = _subset(truth, variables, levels)
    climatology = _subset(climatology, variables, levels)
    aligned = align_truth(truth, forecast).load()
    clim_fc = climatology_forecast(climatology, forecast).load()
    clim_at_valid = clim_fc.isel({MEMBER: 0}, drop=True)
    systems = {
        "forecast": forecast.load(),
        "persistence": persistence(truth, forecast[TIME].values, forecast[LEAD].values).load(),
        "climatology": clim_fc,
    }
    stacked, definitions = [], {}
    for name, fc in systems.items():
        s, definitions[name] = _system_scores(fc, aligned, clim_at_valid, weighting)
        stacked.append(s)
    scores = xr.concat(stacked, pd.Index(SYSTEMS, name="system"), coords="minimal", compat="override")
    scores = scores.drop_vars([c for c in scores.coords if c not in scores.dims])
    scores.attrs = {"weighting": weighting, "definitions": definitions, "n_init_times": forecast.sizes[TIME],
                    "n_members": forecast.sizes.get(MEMBER, 1)}
    return scores


def scores_to_frame(scores: xr.Dataset) -> pd.DataFrame:
    """Long table: one row per (system, metric, variable, level, lead), lead in hours."""
    frames = []
    for name, da in scores.data_vars.items():
        df = da.to_dataframe(name="value").reset_index()
        df["variable"] = name
        if LEVEL not in df:
            df[LEVEL] = np.nan
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out["lead_hours"] = out.pop(LEAD) / pd.Timedelta(hours=1)
    return out[["system", "metric", "variable", LEVEL, "lead_hours", "value"]]


_TABLE_COLUMNS = (("RMSE", "forecast", "rmse"), ("RMSE pers", "persistence", "rmse"),
                  ("RMSE clim", "climatology", "rmse"), ("ACC", "forecast", "acc"),
                  ("CRPS", "forecast", "crps"), ("CRPS clim", "climatology", "crps"),
                  ("SSR", "forecast", "spread_skill"))


def _table_rows(scores: xr.Dataset) -> tuple[list[str], list[list[str]]]:
    header = ["variable", "level", "lead h"] + [c[0] for c in _TABLE_COLUMNS]
    rows = []
    for name, da in scores.data_vars.items():
        for level in da[LEVEL].values if LEVEL in da.dims else [None]:
            sub = da if level is None else da.sel({LEVEL: level})
            for lead in sub[LEAD].values:
                at = sub.sel({LEAD: lead})
                rows.append([str(name), "" if level is None else f"{level:g}",
                             f"{lead / np.timedelta64(1, 'h'):g}"]
                            + [f"{float(at.sel(system=system, metric=metric)):.4g}"
                               for _, system, metric in _TABLE_COLUMNS])
    return header, rows


def format_table(scores: xr.Dataset) -> str:
    """Plain-text headline table (forecast vs baselines), also saved next to the JSON."""
    header, rows = _table_rows(scores)
    widths = [max(len(c) for c in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + f"\n(weighting: {scores.attrs['weighting']}; definitions in scores.json)\n"


def _print_table(scores: xr.Dataset) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(format_table(scores))
        return
    header, rows = _table_rows(scores)
    table = Table(*header, title=f"aeris-ds scorecard (weighting: {scores.attrs['weighting']})")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


@dataclass
class StabilityReport:
    """Per-lead drift diagnostics and the human-readable flags raised from them."""

    diagnostics: xr.Dataset
    flags: list[str] = field(default_factory=list)

    @property
    def blow_up(self) -> bool:
        return any(f.startswith("blow-up") for f in self.flags)

    @property
    def smoothing(self) -> bool:
        return any(f.startswith("smoothing") for f in self.flags)


def _band_power(spectrum: xr.DataArray, band: str) -> xr.DataArray:
    """Power summed over the low/mid/high third of wavenumbers 1..kmax (k = 0 is the zonal mean)."""
    kmax = int(spectrum["wavenumber"].max())
    edges = np.linspace(0, kmax, 4)
    lo, hi = {"low": edges[:2], "mid": edges[1:3], "high": edges[2:]}[band]
    k = spectrum["wavenumber"]
    return spectrum.where((k > lo) & (k <= hi)).sum("wavenumber", skipna=True)


def _first_lead_flags(kind: str, name: str, mask: xr.DataArray, value: xr.DataArray, label: str) -> list[str]:
    """One flag per (variable, level): the first lead where ``mask`` holds, with the offending value."""
    flags = []
    for level in mask[LEVEL].values if LEVEL in mask.dims else [None]:
        at = {} if level is None else {LEVEL: level}
        hits = np.flatnonzero(mask.sel(at).values)
        if hits.size:
            lead = mask[LEAD].values[hits[0]] / np.timedelta64(1, "h")
            where = "" if level is None else f" level {level:g}"
            flags.append(f"{kind}: {name}{where} from lead {lead:g} h ({label} "
                         f"{float(value.sel(at).values[hits[0]]):.3g})")
    return flags


def stability_report(forecast: xr.Dataset, truth: xr.Dataset, *, weighting: Weighting = "area"
                     ) -> StabilityReport:
    """Drift of global mean and spatial std, and spectral power ratios per band, vs lead.

    Flags blow-up where the forecast's spatial std exceeds the truth's by more than
    ``BLOW_UP_STD_RATIO`` or any value is non-finite, and smoothing where the high-wavenumber power
    ratio drops below ``SMOOTHING_POWER_RATIO``. Forecast statistics average over members and inits.
    """
    forecast = forecast.load()
    aligned = align_truth(truth[list(forecast.data_vars)], forecast).load()
    reduce_fc = [d for d in (TIME, MEMBER) if d in forecast.dims]
    diagnostics, flags = {}, []
    for name in forecast.data_vars:
        fc, tr = forecast[name], aligned[name]
        fc_mean, tr_mean = spatial_mean(fc, weighting), spatial_mean(tr, weighting)
        fc_var = spatial_mean((fc - fc_mean) ** 2, weighting).mean(reduce_fc)
        tr_var = spatial_mean((tr - tr_mean) ** 2, weighting).mean(TIME)
        std_ratio = np.sqrt(fc_var / tr_var)
        nonfinite = (~np.isfinite(fc)).mean([d for d in fc.dims if d not in (LEAD, LEVEL)])
        fc_spec = metrics.zonal_power_spectrum(fc, weighting=weighting)
        tr_spec = metrics.zonal_power_spectrum(tr, weighting=weighting)
        rows = {"mean_drift": fc_mean.mean(reduce_fc) - tr_mean.mean(TIME), "std_ratio": std_ratio,
                "nonfinite_fraction": nonfinite}
        for band in ("low", "mid", "high"):
            rows[f"power_ratio_{band}"] = _band_power(fc_spec, band) / _band_power(tr_spec, band)
        diag = xr.concat([r.drop_attrs() for r in rows.values()], pd.Index(list(rows), name="diagnostic"),
                         coords="minimal", compat="override")
        diagnostics[name] = diag
        blow = (std_ratio > BLOW_UP_STD_RATIO) | (nonfinite > 0) | ~np.isfinite(std_ratio)
        flags += _first_lead_flags("blow-up", name, blow, std_ratio, "std ratio")
        smooth = rows["power_ratio_high"] < SMOOTHING_POWER_RATIO
        flags += _first_lead_flags("smoothing", name, smooth, rows["power_ratio_high"], "high-k power ratio")
    ds = xr.Dataset(diagnostics)
    ds.attrs["definition"] = (
        f"per lead, averaged over init times and members, spatial means with {weighting} weights: "
        "mean_drift = global mean(forecast) - global mean(truth); std_ratio = sqrt(spatial variance ratio); "
        "power_ratio_<band> = zonal power of the forecast / truth summed over the low/mid/high third of "
        f"wavenumbers 1..kmax; flags: blow-up if std_ratio > {BLOW_UP_STD_RATIO} or non-finite, smoothing "
        f"if power_ratio_high < {SMOOTHING_POWER_RATIO}")
    return StabilityReport(ds, flags)


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON-ready dicts, with NaN/inf written as null."""
    return [{k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in rec.items()}
            for rec in frame.to_dict(orient="records")]


def write_scorecard(scores: xr.Dataset, out_dir: str | Path, *,
                    stability: StabilityReport | None = None) -> dict[str, Path]:
    """Write scores.json (values + definitions), scores.csv (long table), scorecard.txt; print the table."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = scores_to_frame(scores)
    paths = {"json": out / "scores.json", "csv": out / "scores.csv", "table": out / "scorecard.txt"}
    frame.to_csv(paths["csv"], index=False)
    doc = {key: scores.attrs[key] for key in ("weighting", "definitions", "n_init_times", "n_members")}
    if "partial" in scores.attrs:  # an incomplete forecast scored on its completed lead times
        doc["partial"] = scores.attrs["partial"]
    doc["scores"] = _records(frame)
    flags = stability.flags if stability else []
    if stability is not None:
        diag = stability.diagnostics.to_dataframe().reset_index()
        diag["lead_hours"] = diag.pop(LEAD) / pd.Timedelta(hours=1)
        doc["stability"] = {"definition": stability.diagnostics.attrs["definition"], "flags": flags,
                            "diagnostics": _records(diag)}
    paths["json"].write_text(json.dumps(doc, indent=1, default=str))
    partial = f"{scores.attrs['partial']}\n" if "partial" in scores.attrs else ""
    paths["table"].write_text(partial + format_table(scores) + "".join(f"FLAG {f}\n" for f in flags))
    _print_table(scores)
    return paths
