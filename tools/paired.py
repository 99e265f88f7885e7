"""A lever against its baseline on the same init times: paired ratios with bootstrap intervals.

    python tools/paired.py --truth data/heldsuarez.zarr \
        --baseline "4 members=runs/quality/forecasts/m10-10d-20x8.zarr:4" \
        --system "8 members=runs/quality/forecasts/m10-10d-20x8.zarr" --out results/quality/levers.md

Each side is ``LABEL=STORE[:MEMBERS]`` (``:4`` keeps the first 4 members: members are seeded by (init, member),
so they are the members a 4-member forecast would draw). For the headline fields at 1, 3, 5 and 10 days the
table gives ensemble-mean RMSE (WB2 headline: square root per init, then the mean) and fair CRPS of the
system ÷ the baseline with 90 % percentile bootstrap intervals over init times (the same resamples for both
sides: paired), and each side's spread/skill (√((M+1)/M) corrected). Only init times both stores hold count.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import xarray as xr

from aeris_ds.evaluate.baselines import align_truth
from aeris_ds.evaluate.bootstrap import bootstrap, resample_indices
from aeris_ds.evaluate.inputs import load_inputs
from aeris_ds.evaluate.metrics import ensemble_mean, fair_crps_pointwise
from aeris_ds.evaluate.weights import spatial_mean

HEADLINE = (("z500", "geopotential", 500.0), ("t850", "temperature", 850.0), ("u250", "u_component_of_wind", 250.0))
DAYS = (1, 3, 5, 10)


def per_init(spec: str, truth: str, days: tuple[int, ...] = DAYS) -> tuple[str, xr.Dataset, int]:
    """(label, per-init spatial means of the headline fields: mse, crps, var, members)."""
    label, _, rest = spec.partition("=")
    path, _, members = rest.partition(":")
    inputs = load_inputs(path, truth, variables=sorted({v for _, v, _ in HEADLINE}))
    fc = inputs.forecast
    if members:
        fc = fc.isel(number=slice(0, int(members)))
    hours = np.array([24 * d for d in days], dtype="timedelta64[h]")
    fc = fc.sel(prediction_timedelta=hours)
    aligned = align_truth(inputs.truth, fc)
    parts = {}
    for short, name, level in HEADLINE:
        f, t = fc[name].sel(level=level, drop=True).load(), aligned[name].sel(level=level, drop=True).load()
        parts[f"{short}_mse"] = spatial_mean((ensemble_mean(f) - t) ** 2)
        parts[f"{short}_crps"] = spatial_mean(fair_crps_pointwise(f, t))
        parts[f"{short}_var"] = spatial_mean(f.var("number", ddof=1))
    return label, xr.Dataset({k: v.drop_attrs() for k, v in parts.items()}), fc.sizes["number"]


def table(base: tuple[str, xr.Dataset, int], system: tuple[str, xr.Dataset, int], resamples: int) -> str:
    (la, a, ma), (lb, b, mb) = base, system
    a, b = xr.align(a, b, join="inner", exclude=["prediction_timedelta"])
    joined = xr.merge([a.rename({k: f"a_{k}" for k in a}), b.rename({k: f"b_{k}" for k in b})])
    for side in ("a", "b"):  # the WB2 headline RMSE: the square root per init time, then the mean
        for short, _, _ in HEADLINE:
            joined[f"{side}_{short}_rmse"] = np.sqrt(joined[f"{side}_{short}_mse"])

    def statistic(c: xr.Dataset) -> xr.Dataset:
        out = {}
        for short, _, _ in HEADLINE:
            out[f"{short} RMSE ratio"] = c[f"b_{short}_rmse"] / c[f"a_{short}_rmse"]
            out[f"{short} CRPS ratio"] = c[f"b_{short}_crps"] / c[f"a_{short}_crps"]
            for side, m in (("a", ma), ("b", mb)):
                out[f"{short} SSR {side}"] = np.sqrt(c[f"{side}_{short}_var"] * (m + 1) / m / c[f"{side}_{short}_mse"])
        return xr.Dataset(out)

    n = joined.sizes["time"]
    scores = bootstrap(joined, statistic, indices=resample_indices(n, resamples))
    lines = [f"**{lb}** ÷ **{la}** on the same {n} init times ({mb} vs {ma} members); 90 % paired bootstrap "
             "intervals; SSR: spread/skill corrected by √((M+1)/M).", "",
             "| field | lead | RMSE ratio | CRPS ratio | SSR " + la + " | SSR " + lb + " |", "|---" * 6 + "|"]

    def cell(key: str, lead: np.timedelta64) -> str:
        v = scores[key].sel(prediction_timedelta=lead)
        return f"{float(v.sel(estimate='value')):.3f} [{float(v.sel(estimate='lo')):.3f}, " \
               f"{float(v.sel(estimate='hi')):.3f}]"

    for short, _, _ in HEADLINE:
        for lead in scores.prediction_timedelta.values:
            days = int(lead / np.timedelta64(1, "D"))
            cells = [cell(f"{short} {key}", lead) for key in ("RMSE ratio", "CRPS ratio", "SSR a", "SSR b")]
            lines.append(f"| {short} | {days} d | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--truth", required=True)
    p.add_argument("--baseline", required=True, help="LABEL=STORE[:MEMBERS]")
    p.add_argument("--system", required=True, help="LABEL=STORE[:MEMBERS]")
    p.add_argument("--days", default=",".join(map(str, DAYS)), help="lead days to compare, e.g. 1,3")
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--out", default=None, help="append the table to this markdown file")
    args = p.parse_args(argv)
    days = tuple(int(d) for d in args.days.split(","))
    text = table(per_init(args.baseline, args.truth, days), per_init(args.system, args.truth, days), args.resamples)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
