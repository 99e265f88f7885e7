"""``aeris-ds evaluate``: score a forecast zarr store against truth and write scorecard and plots."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import xarray as xr

from aeris_ds.data.schema import open_store
from aeris_ds.evaluate import plots
from aeris_ds.evaluate.baselines import align_truth, compute_climatology
from aeris_ds.evaluate.scorecard import score, stability_report, write_scorecard
from aeris_ds.evaluate.weights import WEIGHTINGS

LEVEL, LEAD, TIME = "level", "prediction_timedelta", "time"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aeris-ds evaluate", description=__doc__)
    p.add_argument("forecast", help="forecast zarr store (WB2 layout: time, prediction_timedelta, number, …)")
    p.add_argument("--truth", required=True, help="truth zarr store (time, [level], latitude, longitude)")
    p.add_argument("--climatology-from", metavar="START/END",
                   help="truth period for the climatology (default: all truth before the first init time)")
    p.add_argument("--climatology-window-days", type=int, default=15,
                   help="± days of cyclic day-of-year smoothing (default 15; short records need one)")
    p.add_argument("--out", default="evaluation", help="output directory (default ./evaluation)")
    p.add_argument("--variables", nargs="+", help="variables to score (default: all forecast variables)")
    p.add_argument("--levels", nargs="+", type=float, help="pressure levels to score (default: all)")
    p.add_argument("--weighting", choices=WEIGHTINGS, default="area",
                   help="latitude weights: area (WB2 cell area, default) or cos")
    return p


def _climatology_split(truth: xr.Dataset, forecast: xr.Dataset, period: str | None) -> xr.Dataset:
    """The truth period the climatology is fitted on; never silently overlaps evaluation by default."""
    if period is not None:
        start, sep, end = period.partition("/")
        if not sep or not start or not end:
            raise SystemExit(f"--climatology-from must look like START/END, got {period!r}")
        split = truth.sel({TIME: slice(start, end)})
    else:
        first_init = forecast[TIME].values.min()
        split = truth.sel({TIME: truth[TIME] < first_init})
    if split.sizes[TIME] == 0:
        raise SystemExit("no truth times for the climatology: truth has "
                         f"{str(truth[TIME].values[0])[:19]} .. {str(truth[TIME].values[-1])[:19]}; "
                         "pass --climatology-from START/END")
    return split


def _plot_level(ds: xr.Dataset, variable: str) -> float | None:
    """500 hPa when present (the headline level), else the first level; None for surface fields."""
    if LEVEL not in ds[variable].dims:
        return None
    levels = ds[LEVEL].values.tolist()
    return 500.0 if 500.0 in levels else levels[0]


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation and print the written paths."""
    args = _parser().parse_args(argv)
    forecast = xr.open_zarr(args.forecast)
    truth = open_store(args.truth)
    # Forecast fields only: the store also holds the rollout's progress record.
    variables = args.variables or sorted(str(v) for v in forecast.data_vars if LEAD in forecast[v].dims)
    try:
        aligned = align_truth(truth[variables], forecast[variables])
    except KeyError as err:
        raise SystemExit(f"cannot evaluate {args.forecast}: {err.args[0]}") from err
    split = _climatology_split(truth[variables], forecast, args.climatology_from)
    climatology = compute_climatology(split.load(), window_days=args.climatology_window_days)
    scores = score(forecast, truth, climatology, variables=variables, levels=args.levels,
                   weighting=args.weighting)
    scored_levels = {LEVEL: scores[LEVEL].values} if LEVEL in scores.dims else {}
    fc, aligned = forecast[variables].sel(scored_levels).load(), aligned.sel(scored_levels).load()
    stability = stability_report(fc, truth, weighting=args.weighting)
    out = Path(args.out)
    paths = list(write_scorecard(scores, out, stability=stability).values())
    leads = fc[LEAD].values
    some_leads = leads[np.unique(np.linspace(0, leads.size - 1, min(3, leads.size)).astype(int))]
    for var in variables:
        level = _plot_level(fc, var)
        stem = var if level is None else f"{var}_{level:g}"
        paths += [
            plots.plot_skill_vs_lead(scores, var, out / f"skill_{stem}.png", level=level),
            plots.plot_spectra(fc, aligned, var, out / f"spectra_{stem}.png", leads=some_leads, level=level,
                               weighting=args.weighting),
            plots.plot_maps(fc, aligned, var, out / f"maps_{stem}.png", leads=some_leads, level=level),
        ]
        if scores.attrs["n_members"] > 1:
            paths.append(plots.plot_spread_skill(scores, var, out / f"spread_skill_{stem}.png", level=level))
    for flag in stability.flags:
        print(f"FLAG {flag}")
    for path in paths:
        print(path)
    return 0
