"""Calibration table: ensemble forecasts from weights under several sampler settings, scored side by side.

    python tools/calibration.py --weights runs/demo/weights.pt --store data/heldsuarez.zarr \
        --work runs/calibration --out results/calibration --init-times test:20 --members 4 --lead 10d \
        --variant preset= --variant aeris=steps=10,sigma_max=500,sigma_min=0.2

A variant is ``NAME=KEY=VALUE,…`` (sampler keys as in the YAML's ``sampler`` section; nothing after ``=``
keeps the sampler saved with the weights); several ``--weights LABEL=PATH`` are crossed with the variants.
Each forecast goes to ``<work>/<label>-<name>.zarr`` and is scored by ``aeris-ds evaluate`` (``--plots``: none
by default) into ``<out>/<label>-<name>/``; its row (one JSON in ``--out``, so runs may go in parallel) holds
spread/skill with the finite-ensemble factor, fair CRPS, z500 RMSE ratios and rank-histogram flatness, each
with its 90 % bootstrap interval over init times, the band power ratios (forecast ÷ truth zonal power,
smallest–largest over variables and levels), the stability verdict and the forecast's wall time per
member-step. ``calibration.md``/``.csv`` gather all rows. A forecast whose row exists is not redone; an
interrupted one resumes from its store.
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
from aeris_ds.evaluate.cli import main as evaluate
from aeris_ds.forecast.driver import run_forecast, sampler_overrides

DAYS = (1, 3, 5, 10)
HEADLINE = (("geopotential", 500), ("temperature", 850), ("u_component_of_wind", 250))
SHORT = {"geopotential": "z", "temperature": "t", "u_component_of_wind": "u"}


def _pick(frame: pd.DataFrame, metric: str, variable: str, level: float | None, hours: float) -> pd.Series:
    rows = frame[(frame.system == "forecast") & (frame.metric == metric) & (frame.variable == variable)
                 & np.isclose(frame.lead_hours, hours)]
    rows = rows[rows.level.isna()] if level is None else rows[np.isclose(rows.level, level)]
    return rows.iloc[0] if len(rows) else pd.Series({"value": np.nan, "lo": np.nan, "hi": np.nan})


def _cell(row: pd.Series) -> str:
    return f"{row['value']:.3g} [{row['lo']:.3g}, {row['hi']:.3g}]"


def summarise(scores_dir: Path) -> dict[str, object]:
    """The table's numbers from one ``aeris-ds evaluate`` output: value [90 % interval over init times]."""
    frame = pd.read_csv(scores_dir / "scores.csv")
    doc = json.loads((scores_dir / "scores.json").read_text())
    row: dict[str, object] = {}
    for name, level in HEADLINE:
        for d in DAYS:
            row[f"SSR corr {SHORT[name]}{level} {d}d"] = _cell(_pick(frame, "spread_skill_corrected", name, level,
                                                                      24 * d))
    for d in (1, 3):
        row[f"CRPS z500 {d}d"] = _cell(_pick(frame, "crps", "geopotential", 500, 24 * d))
    for d in (1, 5, 10):
        row[f"rank U z500 {d}d"] = _cell(_pick(frame, "rank_outlier_ratio", "geopotential", 500, 24 * d))
    for d in (1, 3, 5):
        row[f"RMSE/pers z500 {d}d"] = _cell(_pick(frame, "rmse_ratio_persistence", "geopotential", 500, 24 * d))
    clim = frame[(frame.system == "forecast") & (frame.metric == "rmse_ratio_climatology")
                 & (frame.variable == "geopotential") & np.isclose(frame.level, 500) & (frame.lead_hours >= 72)]
    row["RMSE/clim z500 max 3-10d (upper bound)"] = f"{clim['value'].max():.3g} ({clim['hi'].max():.3g})"
    crps_mae = frame[(frame.system == "forecast") & (frame.metric == "crps_ratio_mae")
                     & (frame.variable == "geopotential") & np.isclose(frame.level, 500)]
    row["CRPS/MAE z500 max (upper bound)"] = f"{crps_mae['value'].max():.3g} ({crps_mae['hi'].max():.3g})"
    diag = pd.DataFrame(doc["stability"]["diagnostics"])
    variables = [c for c in diag.columns if c not in ("diagnostic", "level", "lead_hours")]
    days = [d for d in (1, 10, 30, 60, 90) if np.isclose(diag.lead_hours, 24 * d).any()]
    for band in ("beyond", "high", "mid", "low"):
        for d in days:
            at = diag[(diag.diagnostic == f"power_ratio_{band}") & np.isclose(diag.lead_hours, 24 * d)][variables]
            if at.size:
                row[f"power {band} {d}d min-max"] = f"{np.nanmin(at.values):.3g}-{np.nanmax(at.values):.3g}"
    for d in days:
        at = diag[(diag.diagnostic == "power_ratio_high") & np.isclose(diag.lead_hours, 24 * d)
                  & np.isclose(diag.level, 500)]["geopotential"]
        row[f"power high z500 {d}d"] = f"{at.iloc[0]:.3g}" if len(at) else "nan"
    verdict = {True: "PASS", False: "FAIL", None: "n/a"}
    for c in doc["stability"]["criteria"]:
        row[f"stability: {c['name']}"] = f"{verdict[c['passed']]}: {c['detail']}"
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", action="append", required=True, help="PATH or LABEL=PATH (repeatable)")
    p.add_argument("--store", required=True)
    p.add_argument("--work", required=True, help="folder for the forecast stores")
    p.add_argument("--out", required=True, help="folder for the rows (one JSON per forecast) and the table")
    p.add_argument("--variant", action="append", default=[], help="NAME=KEY=VALUE,… (repeatable)")
    p.add_argument("--init-times", default="test:20")
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--lead", default="10d")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples for the 90 %% intervals")
    p.add_argument("--batch", type=int, default=16,
                   help="(init, member) rows per network call (2 cores: 0.44 s per member-step at 16, ~1.4 s at 64)")
    p.add_argument("--plots", choices=("none", "headline", "all"), default="none", help="aeris-ds evaluate --plots")
    p.add_argument("--table-only", action="store_true", help="rebuild the table from the rows in --out")
    args = p.parse_args(argv)
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        truth = open_store(args.store)
        work.mkdir(parents=True, exist_ok=True)
        for spec in args.weights:
            label, _, path = spec.rpartition("=")
            label = label or Path(path).parent.name
            for variant in args.variant or ["saved="]:
                name, _, overrides = variant.partition("=")
                dest, scores = work / f"{label}-{name}.zarr", out / f"{label}-{name}"
                if (out / f"{label}-{name}.json").exists():
                    continue
                resumed, start = dest.exists(), time.perf_counter()
                run_forecast(path, args.store, dest, args.init_times, args.members, args.lead,
                             sampler_overrides(path, overrides), args.seed, progress=False, batch=args.batch)
                wall = time.perf_counter() - start
                fc = xr.open_zarr(dest)
                steps = fc.sizes["prediction_timedelta"] * fc.sizes["time"] * fc.sizes["number"]
                evaluate([str(dest), "--truth", args.store, "--out", str(scores), "--plots", args.plots,
                          "--overwrite", "--climatology-from", truth.attrs["split_train"],
                          "--resamples", str(args.resamples)])
                row = {"weights": label, "variant": name, "sampler": fc.attrs.get("sampler", "?"),
                       "inits": fc.sizes["time"], "members": fc.sizes["number"], "lead": args.lead,
                       "s per member-step": "resumed" if resumed else f"{wall / steps:.3g}", **summarise(scores)}
                print(json.dumps(row), flush=True)
                (out / f"{label}-{name}.json").write_text(json.dumps(row, indent=1))
    rows = [json.loads(f.read_text()) for f in sorted(out.glob("*.json"))]
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "calibration.csv", index=False)
    (out / "calibration.md").write_text(markdown(frame))
    print(out / "calibration.md")


def markdown(frame: pd.DataFrame) -> str:
    """The table transposed (one column per forecast), numbers to 3 significant digits."""
    cols = [f"{w}/{v}" for w, v in zip(frame.weights, frame.variant)]
    lines = ["| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for key in frame.columns.drop(["weights", "variant", "sampler"]):
        cells = [str(x) for x in frame[key]]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    samplers = [f"- {c}: {s}" for c, s in zip(cols, frame.sampler)]
    return "\n".join(lines + ["", *samplers]) + "\n"


if __name__ == "__main__":
    main()
