"""``aeris-ds evaluate``: score a forecast zarr store against truth and write scorecard and plots."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import xarray as xr

from aeris_ds.errors import ConfigError, DataError
from aeris_ds.evaluate import plots
from aeris_ds.evaluate.baselines import align_truth, compute_climatology
from aeris_ds.evaluate.inputs import load_inputs
from aeris_ds.evaluate.scorecard import score, stability_report, write_scorecard
from aeris_ds.evaluate.weights import WEIGHTINGS
from aeris_ds.outputs import check_output, writing

LEVEL, LEAD, TIME = "level", "prediction_timedelta", "time"
KIND = "evaluation"  # the output kind of the --out folder (aeris_ds.outputs)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aeris-ds evaluate", description=__doc__)
    p.add_argument("forecast", help="forecast zarr store (WB2 layout: time, prediction_timedelta, number, …)")
    p.add_argument("--truth", required=True, help="truth zarr store (time, [level], latitude, longitude)")
    p.add_argument("--climatology-from", metavar="START/END",
                   help="truth period for the climatology (default: all truth before the first init time)")
    p.add_argument("--climatology-window-days", type=int, default=15,
                   help="± days of cyclic day-of-year smoothing (default 15; short records need one)")
    p.add_argument("--out", default="evaluation",
                   help="output directory (default ./evaluation), written whole by one rename when complete")
    p.add_argument("--overwrite", action="store_true", help="replace an existing evaluation at --out")
    p.add_argument("--partial", action="store_true",
                   help="score an incomplete forecast on the lead times every member completed")
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
            raise ConfigError(f"--climatology-from must look like START/END, got {period!r}")
        split = truth.sel({TIME: slice(start, end)})
    else:
        first_init = forecast[TIME].values.min()
        split = truth.sel({TIME: truth[TIME] < first_init})
    if split.sizes[TIME] == 0:
        raise DataError("no truth times for the climatology: truth has "
                        f"{str(truth[TIME].values[0])[:19]} .. {str(truth[TIME].values[-1])[:19]}; "
                        "pass --climatology-from START/END")
    return split


def _plot_level(ds: xr.Dataset, variable: str) -> float | None:
    """500 hPa when present (the headline level), else the first level; None for surface fields."""
    if LEVEL not in ds[variable].dims:
        return None
    levels = ds[LEVEL].values.tolist()
    return 500.0 if 500.0 in levels else levels[0]


def _times(forecast: xr.Dataset, split: xr.Dataset) -> np.ndarray:
    """Every truth time the scores use: init and valid times, and the climatology period."""
    valid = (forecast[TIME] + forecast[LEAD]).values.ravel()
    return np.unique(np.concatenate([forecast[TIME].values, valid, split[TIME].values]).astype("datetime64[ns]"))


def main(argv: list[str] | None = None) -> int:
    """Check the inputs, score, and write the scorecard and plots into ``--out`` in one rename."""
    args = _parser().parse_args(argv)
    inputs = load_inputs(args.forecast, args.truth, args.variables, args.levels, args.partial)
    check_output(args.out, KIND, inputs=[args.forecast, args.truth], overwrite=args.overwrite)
    forecast, variables = inputs.forecast, inputs.variables
    split = _climatology_split(inputs.truth, forecast, args.climatology_from)
    # Only the truth times used, loaded once, in float64 like the forecast.
    truth = inputs.truth.sel({TIME: _times(forecast, split)}).load().astype(np.float64)
    climatology = compute_climatology(truth.sel({TIME: split[TIME].values}),
                                      window_days=args.climatology_window_days)
    if inputs.note:
        print(inputs.note)
    scores = score(forecast, truth, climatology, variables=variables, levels=inputs.levels,
                   weighting=args.weighting)
    if inputs.note:
        scores.attrs["partial"] = inputs.note
    scored_levels = {LEVEL: scores[LEVEL].values} if LEVEL in scores.dims else {}
    fc, aligned = forecast.sel(scored_levels).load(), align_truth(truth, forecast).sel(scored_levels).load()
    stability = stability_report(fc, truth, weighting=args.weighting)
    out = Path(args.out)
    with writing(out, KIND) as tmp:
        paths = list(write_scorecard(scores, tmp, stability=stability).values())
        paths += _plots(scores, fc, aligned, variables, tmp, args.weighting)
    for flag in stability.flags:
        print(f"FLAG {flag}")
    for path in paths:
        print(out / path.relative_to(tmp))
    return 0


def _plots(scores: xr.Dataset, fc: xr.Dataset, aligned: xr.Dataset, variables: list[str], out: Path,
           weighting: str) -> list[Path]:
    leads = fc[LEAD].values
    some_leads = leads[np.unique(np.linspace(0, leads.size - 1, min(3, leads.size)).astype(int))]
    paths = []
    for var in variables:
        level = _plot_level(fc, var)
        stem = var if level is None else f"{var}_{level:g}"
        paths += [
            plots.plot_skill_vs_lead(scores, var, out / f"skill_{stem}.png", level=level),
            plots.plot_spectra(fc, aligned, var, out / f"spectra_{stem}.png", leads=some_leads, level=level,
                               weighting=weighting),
            plots.plot_maps(fc, aligned, var, out / f"maps_{stem}.png", leads=some_leads, level=level),
        ]
        if scores.attrs["n_members"] > 1:
            paths.append(plots.plot_spread_skill(scores, var, out / f"spread_skill_{stem}.png", level=level))
    return paths
