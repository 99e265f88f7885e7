"""Evaluation benchmark: ``aeris-ds evaluate`` on a synthetic 20-init ensemble forecast, against one plain
xarray read of the bytes it needs (the forecast, and the truth from the first training time to the last
valid time) measured in the same run.

The truth is the synthetic travelling-wave store on the demo's 32×64 grid (3 levels, 6 variables), the
forecast the truth at its valid times plus member noise, in the WB2 layout the forecast driver writes.

    python tools/bench_evaluate.py [--inits 20] [--members 8] [--lead-days 5] [--days 600] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

from aeris_ds.data.schema import open_store
from aeris_ds.data.synthetic import synthetic_store
from aeris_ds.evaluate.baselines import align_truth
from aeris_ds.evaluate.cli import main as evaluate
from aeris_ds.forecast.store import PROGRESS, ForecastStore


def make_forecast(truth_path: Path, out: Path, inits: int, members: int, lead_days: int) -> Path:
    """Truth at the valid times plus noise growing with lead, ``inits`` evenly over the test split."""
    truth = open_store(truth_path)
    start, end = (np.datetime64(s) for s in truth.attrs["split_test"].split("/"))
    leads = np.arange(1, lead_days * 4 + 1) * np.timedelta64(6, "h")
    last = end - leads[-1]
    init_times = truth.time.sel(time=slice(start, last)).values
    init_times = init_times[np.linspace(0, init_times.size - 1, inits).round().astype(int)]
    variables = {str(v): (truth.level.values.tolist() if "level" in truth[v].dims else None)
                 for v in truth.data_vars if "time" in truth[v].dims}
    store = ForecastStore.create(out, init_times, leads, members, variables, truth.latitude.values,
                                 truth.longitude.values)
    grid = xr.Dataset(coords={"time": init_times, "prediction_timedelta": leads})
    aligned = align_truth(truth[list(variables)], grid).load()
    rng = np.random.default_rng(0)
    growth = np.sqrt(np.arange(1, leads.size + 1))[:, None]
    for name in variables:
        exact = aligned[name].transpose("time", "prediction_timedelta", ...).values[:, :, None]
        scale = 0.02 * exact.std()
        noise = rng.standard_normal((inits, leads.size, members, *exact.shape[3:]), dtype=np.float32)
        store._arrays[name][:] = exact + scale * noise * growth.reshape((1, -1, 1) + (1,) * (exact.ndim - 3))
    store._group[PROGRESS][:] = leads.size
    return out


def plain_read(forecast: Path, truth_path: Path) -> tuple[float, float]:
    """Wall and CPU seconds to load the forecast and the truth span evaluate touches with plain xarray."""
    start, cpu = time.perf_counter(), time.process_time()
    fc = xr.open_zarr(forecast, chunks=None)  # as evaluate reads it: a dask task per chunk is slower
    variables = [v for v in fc.data_vars if "prediction_timedelta" in fc[v].dims]
    fc[variables].load()
    truth = open_store(truth_path)
    first = truth.attrs["split_train"].split("/")[0]
    last = fc.time.values.max() + fc.prediction_timedelta.values.max()
    truth[variables].sel(time=slice(first, last)).load()
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inits", type=int, default=20)
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--lead-days", type=int, default=5)
    p.add_argument("--days", type=float, default=600, help="truth length (60 %% training split)")
    p.add_argument("--profile", action="store_true", help="print the top functions by cumulative time")
    p.add_argument("--workdir", help="keep the stores here (default: a temporary folder)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        truth, fc = work / "truth.zarr", work / "forecast.zarr"
        if not truth.exists():
            synthetic_store(truth, n_lat=32, n_lon=64, days=args.days, levels=(250, 500, 850))
        if not fc.exists():
            make_forecast(truth, fc, args.inits, args.members, args.lead_days)
        read_s, read_cpu = plain_read(fc, truth)
        train = open_store(truth).attrs["split_train"]
        profile = cProfile.Profile() if args.profile else None
        start, cpu = time.perf_counter(), time.process_time()
        if profile:
            profile.enable()
        evaluate([str(fc), "--truth", str(truth), "--out", str(work / f"eval-{time.time_ns()}"),
                  "--climatology-from", train])
        if profile:
            profile.disable()
        eval_s, eval_cpu = time.perf_counter() - start, time.process_time() - cpu
        if profile:
            pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
    print(f"forecast: {args.inits} inits × {args.members} members × {args.lead_days} d; truth {args.days:g} d")
    print(f"plain read of the bytes needed: {read_s:.1f} s wall, {read_cpu:.1f} s CPU")
    print(f"evaluate:                       {eval_s:.1f} s wall, {eval_cpu:.1f} s CPU "
          f"({eval_s / read_s:.1f}× the read's wall time, {eval_cpu / read_cpu:.1f}× its CPU time)")


if __name__ == "__main__":
    main()
