"""``aeris-ds evaluate``: score a forecast zarr store against truth and write scorecard and plots."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import xarray as xr

from aeris_ds.args import (
    ArgumentParser,
    existing_path,
    int_between,
    output_path,
    period,
    positive_float,
    positive_int,
)
from aeris_ds.errors import DataError
from aeris_ds.evaluate import plots
from aeris_ds.evaluate.baselines import align_truth, climatology_forecast, compute_climatology, valid_times
from aeris_ds.evaluate.climatology_store import load_climatology
from aeris_ds.evaluate.inputs import load_inputs
from aeris_ds.evaluate.scorecard import rank_histograms, score, write_scorecard
from aeris_ds.evaluate.stability import LONG_LEAD_DAYS, stability_report
from aeris_ds.evaluate.weights import WEIGHTINGS
from aeris_ds.outputs import check_output, writing

LEVEL, LEAD, TIME, MEMBER = "level", "prediction_timedelta", "time", "number"
KIND = "evaluation"  # the output kind of the --out folder (aeris_ds.outputs)
# Plotted by default (--plots headline), at these levels when scored: the fields issue-style scorecards quote.
HEADLINE = {"geopotential": 500.0, "temperature": 850.0, "u_component_of_wind": 250.0}


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="aeris-ds evaluate", description=__doc__)
    p.add_argument("forecast", type=existing_path,
                   help="forecast zarr store (WB2 layout: time, prediction_timedelta, number, …)")
    p.add_argument("--truth", required=True, type=existing_path,
                   help="truth zarr store (time, [level], latitude, longitude)")
    p.add_argument("--climatology", metavar="STORE", type=existing_path,
                   help="a WeatherBench2-layout climatology (dims dayofyear, hour) instead of one fitted on the truth")
    p.add_argument("--climatology-from", metavar="START/END", type=period,
                   help="truth period for the climatology (default: all truth before the first init time)")
    p.add_argument("--climatology-window-days", type=int_between(0, 183), default=15,
                   help="± days of cyclic day-of-year smoothing, 0–183 (default 15; short records need one)")
    p.add_argument("--out", default="evaluation", type=output_path,
                   help="output directory (default ./evaluation), written whole by one rename when complete")
    p.add_argument("--overwrite", action="store_true", help="replace an existing evaluation at --out")
    p.add_argument("--partial", action="store_true",
                   help="score an incomplete forecast on the lead times every member completed")
    p.add_argument("--variables", nargs="+", help="variables to score (default: all forecast variables)")
    p.add_argument("--levels", nargs="+", type=positive_float, help="pressure levels to score (default: all)")
    p.add_argument("--weighting", choices=WEIGHTINGS, default="area",
                   help="latitude weights: area (WB2 cell area, default) or cos")
    p.add_argument("--plots", choices=("headline", "all", "none"), default="headline",
                   help="figures for the headline fields (z500, t850, u250 when scored; default), every "
                        "scored variable, or none")
    p.add_argument("--resamples", type=positive_int, default=1000,
                   help="bootstrap resamples of the init times for the 90%% intervals (default 1000)")
    return p


def _climatology_split(truth: xr.Dataset, forecast: xr.Dataset, period: str | None) -> xr.Dataset:
    """The truth period the climatology is fitted on; never silently overlaps evaluation by default."""
    if period is not None:
        start, _, end = period.partition("/")  # checked by the parser; as text, END includes its whole day
        split = truth.sel({TIME: slice(start.strip(), end.strip())})
    else:
        first_init = forecast[TIME].values.min()
        split = truth.sel({TIME: truth[TIME] < first_init})
    if split.sizes[TIME] == 0:
        raise DataError("no truth times for the climatology: truth has "
                        f"{str(truth[TIME].values[0])[:19]} .. {str(truth[TIME].values[-1])[:19]}; "
                        "pass --climatology-from START/END")
    return split


def _plot_level(ds: xr.Dataset, variable: str) -> float | None:
    """The headline level when present (z500, t850, u250), else 500 hPa or the first level; None for surface."""
    if LEVEL not in ds[variable].dims:
        return None
    levels = ds[LEVEL].values.tolist()
    for level in (HEADLINE.get(variable), 500.0):
        if level in levels:
            return level
    return levels[0]


def _times(forecast: xr.Dataset, split: xr.Dataset, window_days: int) -> np.ndarray:
    """Every truth time the scores use: init and valid times, and the climatology period's times within
    ``window_days`` of a scored day of year (the only ones the climatology needs)."""
    valid = valid_times(forecast)
    near = (np.unique(valid.dt.dayofyear.values)[:, None] - 1 + np.arange(-window_days, window_days + 1)) % 366 + 1
    clim = split[TIME].values[np.isin(split[TIME].dt.dayofyear.values, near)]
    return np.unique(np.concatenate([forecast[TIME].values, valid.values.ravel(), clim]).astype("datetime64[ns]"))


def main(argv: list[str] | None = None) -> int:
    """Check the inputs, score, and write the scorecard and plots into ``--out`` in one rename."""
    args = _parser().parse_args(argv)
    inputs = load_inputs(args.forecast, args.truth, args.variables, args.levels, args.partial)
    check_output(args.out, KIND, inputs=[args.forecast, args.truth, *filter(None, [args.climatology])],
                 overwrite=args.overwrite)
    forecast, variables = inputs.forecast, inputs.variables
    stored = load_climatology(args.climatology, variables, forecast) if args.climatology else None
    split = (inputs.truth.isel({TIME: slice(0, 0)}) if stored is not None
             else _climatology_split(inputs.truth, forecast, args.climatology_from))
    # Only the truth times used, loaded once, in float64 like the forecast.
    truth = inputs.truth.sel({TIME: _times(forecast, split, args.climatology_window_days)}).load()
    truth = truth.astype(np.float64)
    climatology = stored.astype(np.float64) if stored is not None else compute_climatology(
        truth.sel({TIME: truth[TIME].isin(split[TIME])}), window_days=args.climatology_window_days,
        days=valid_times(forecast).dt.dayofyear.values.ravel())
    if inputs.note:
        print(inputs.note)
    fc = forecast.sel({LEVEL: inputs.levels} if inputs.levels is not None else {}).load()  # read once
    scores = score(fc, truth, climatology, variables=variables, levels=inputs.levels, weighting=args.weighting,
                   n_resamples=args.resamples)
    if inputs.note:
        scores.attrs["partial"] = inputs.note
    stability = stability_report(fc, truth, weighting=args.weighting)
    ranks = rank_histograms(fc, truth, weighting=args.weighting, n_resamples=args.resamples) \
        if fc.sizes.get(MEMBER, 1) > 1 else None
    out = Path(args.out)
    with writing(out, KIND) as tmp:
        paths = list(write_scorecard(scores, tmp, stability=stability, rank_histogram=ranks).values())
        paths += _plots(args, variables, fc, truth, climatology, scores, ranks, stability.spectra, tmp)
    for path in paths:
        print(out / path.relative_to(tmp))
    return 0


def _stem(variable: str, level: float | None) -> str:
    return variable if level is None else f"{variable}_{level:g}"


def _spaced(leads: np.ndarray, n: int) -> np.ndarray:
    """Up to n leads spread from first to last, plus days 30/60/90 when the rollout reaches them."""
    picked = leads[np.unique(np.linspace(0, leads.size - 1, min(n, leads.size)).astype(int))]
    long = leads[np.isin(leads, np.array(LONG_LEAD_DAYS) * np.timedelta64(24, "h"))]
    return np.union1d(picked, long)


def _plots(args: argparse.Namespace, variables: list[str], fc: xr.Dataset, truth: xr.Dataset,
           climatology: xr.Dataset, scores: xr.Dataset, ranks: xr.Dataset | None, spectra: xr.Dataset,
           out: Path) -> list[Path]:
    if args.plots == "none":
        return []
    chosen = variables if args.plots == "all" else [v for v in HEADLINE if v in variables] or variables[:1]
    leads = fc[LEAD].values
    aligned = align_truth(truth[chosen], fc[chosen])
    paths = []
    for var in chosen:
        level = _plot_level(fc, var)
        stem = _stem(var, level)
        paths += [
            plots.plot_skill_vs_lead(scores, var, out / f"skill_{stem}.png", level=level),
            plots.plot_spectra(spectra, var, out / f"spectra_{stem}.png", leads=_spaced(leads, 4), level=level),
            plots.plot_maps(fc, aligned, var, out / f"maps_{stem}.png", leads=_spaced(leads, 3), level=level),
        ]
        if ranks is not None:
            paths += [plots.plot_spread_skill(scores, var, out / f"spread_skill_{stem}.png", level=level),
                      plots.plot_rank_histogram(ranks, var, out / f"rank_histogram_{stem}.png",
                                                leads=_spaced(leads, 3), level=level)]
    var = next((v for v in HEADLINE if v in chosen), chosen[0])  # z500 when scored
    level = _plot_level(fc, var)
    clim_fc = climatology_forecast(climatology[[var]], fc[[var]].isel({TIME: [0]}))
    paths.append(plots.plot_hovmoller(fc, aligned, clim_fc, var, out / f"hovmoller_{_stem(var, level)}.png",
                                      level=level, weighting=args.weighting))
    return paths


if __name__ == "__main__":
    from aeris_ds.errors import run_command

    raise SystemExit(run_command(main))
