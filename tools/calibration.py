"""Calibration table: ensemble forecasts from one set of weights under several sampler settings, scored side by side.

    python tools/calibration.py --weights runs/demo/weights.pt --store data/heldsuarez.zarr \
        --work runs/calibration --out results/calibration --init-times test:20 --members 4 --lead 10d \
        --variant saved= --variant sigma_min=0.02:sigma_min=0.02 --variant churn:churn=2,s_tmin=0.5,s_tmax=50

A variant is ``NAME=KEY=VALUE,…`` (sampler keys as in the YAML's ``sampler`` section; nothing after ``=``
keeps the sampler saved with the weights). Each forecast goes to ``<work>/<name>.zarr`` (kept: ``aeris-ds
evaluate`` reads it for plots); the table goes to ``<out>/calibration.md`` and ``.csv``: spread/skill (with
the finite-ensemble factor), fair CRPS, z500 RMSE ratios to persistence and climatology, the high/mid/low
band power ratios of every variable (forecast ÷ truth zonal power; the worst over variables and levels),
and the forecast's wall time per member-step. Several ``--weights`` (``LABEL=PATH``) are crossed with the
variants.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from aeris_ds.data.schema import open_store
from aeris_ds.evaluate.baselines import compute_climatology
from aeris_ds.evaluate.scorecard import score, stability_report
from aeris_ds.forecast.driver import run_forecast, sampler_overrides

DAYS = (1, 3, 5, 10)
HEADLINE = (("geopotential", 500), ("temperature", 850), ("u_component_of_wind", 250))
SHORT = {"geopotential": "z", "temperature": "t", "u_component_of_wind": "u"}


def _at(da: xr.DataArray, hours: float) -> float:
    leads = da["prediction_timedelta"].values / np.timedelta64(1, "h")
    hit = np.flatnonzero(np.isclose(leads, hours))
    return float(da.isel(prediction_timedelta=hit[0])) if hit.size else float("nan")


def summarise(fc: xr.Dataset, truth: xr.Dataset, clim: xr.Dataset) -> dict[str, float]:
    """The table's numbers for one forecast."""
    variables = sorted(str(v) for v in fc.data_vars if "prediction_timedelta" in fc[v].dims)
    fc = fc[variables].load()
    scores = score(fc, truth, clim, variables=variables)
    row: dict[str, float] = {}
    for name, level in HEADLINE:
        sel = {"level": level} if "level" in scores[name].dims else {}
        s = scores[name].sel(sel)
        for d in DAYS:
            row[f"ssr_{SHORT[name]}{level}_{d}d"] = _at(s.sel(system="forecast", metric="spread_skill_corrected"),
                                                        24 * d)
    z = scores["geopotential"].sel(level=500)
    rmse = z.sel(metric="rmse")
    for d in (1, 3):
        row[f"crps_z500_{d}d"] = _at(z.sel(system="forecast", metric="crps"), 24 * d)
    for d in (1, 3, 5, 10):
        row[f"z500_rmse/pers_{d}d"] = _at(rmse.sel(system="forecast") / rmse.sel(system="persistence"), 24 * d)
    late = rmse["prediction_timedelta"] >= np.timedelta64(72, "h")
    ratio_clim = (rmse.sel(system="forecast") / rmse.sel(system="climatology")).where(late)
    row["z500_rmse/clim_max_3-10d"] = float(ratio_clim.max())
    crps_over_mae = z.sel(system="forecast", metric="crps") / z.sel(system="forecast", metric="mae_ensemble_mean")
    row["z500_crps/mae_max"] = float(crps_over_mae.max())
    diag = stability_report(fc, truth).diagnostics
    power = pd.concat([diag[v].to_dataframe(name="value").reset_index().assign(variable=v) for v in variables])
    power["hours"] = power.pop("prediction_timedelta") / pd.Timedelta(hours=1)
    for band in ("high", "mid", "low"):
        for d in (1, 10):
            at = power[(power.diagnostic == f"power_ratio_{band}") & np.isclose(power.hours, 24 * d)]["value"]
            row[f"power_{band}_max_{d}d"], row[f"power_{band}_min_{d}d"] = at.max(), at.min()
    z500_high = diag["geopotential"].sel(diagnostic="power_ratio_high", level=500)
    for d in (1, 10):
        row[f"power_high_z500_{d}d"] = _at(z500_high, 24 * d)
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", action="append", required=True, help="PATH or LABEL=PATH (repeatable)")
    p.add_argument("--store", required=True)
    p.add_argument("--work", required=True, help="folder for the forecast stores")
    p.add_argument("--out", required=True, help="folder for calibration.md / .csv")
    p.add_argument("--variant", action="append", default=[], help="NAME=KEY=VALUE,… (repeatable)")
    p.add_argument("--init-times", default="test:20")
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--lead", default="10d")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    truth = open_store(args.store)
    clim = compute_climatology(truth.sel(time=slice(*truth.attrs["split_train"].split("/"))).load(),
                               window_days=15)
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in args.weights:
        label, _, path = spec.rpartition("=")
        label = label or Path(path).parent.name
        for variant in args.variant or ["saved="]:
            name, _, overrides = variant.partition("=")
            sampler = sampler_overrides(path, overrides)
            dest = work / f"{label}-{name}.zarr"
            start = time.perf_counter()
            run_forecast(path, args.store, dest, args.init_times, args.members, args.lead, sampler, args.seed,
                         progress=False)
            wall = time.perf_counter() - start
            fc = xr.open_zarr(dest)
            steps = fc.sizes["prediction_timedelta"] * fc.sizes["time"] * fc.sizes["number"]
            used = sampler or run_forecast_sampler(dest)
            row = {"weights": label, "variant": name, "sampler": str(used), "inits": fc.sizes["time"],
                   "members": fc.sizes["number"], "s_per_member_step": wall / steps,
                   **summarise(fc, truth, clim)}
            print(json.dumps(row), flush=True)
            rows.append(row)
            frame = pd.DataFrame(rows)
            frame.to_csv(out / "calibration.csv", index=False)
            (out / "calibration.md").write_text(markdown(frame))


def markdown(frame: pd.DataFrame) -> str:
    """The table transposed (one column per forecast), numbers to 3 significant digits."""
    cols = [f"{w}/{v}" for w, v in zip(frame.weights, frame.variant)]
    lines = ["| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for key in frame.columns.drop(["weights", "variant"]):
        cells = [f"{x:.3g}" if isinstance(x, float) else str(x) for x in frame[key]]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_forecast_sampler(dest: Path) -> str:
    """The sampler a forecast store says it used."""
    return str(xr.open_zarr(dest).attrs.get("sampler", "?"))


if __name__ == "__main__":
    main()
