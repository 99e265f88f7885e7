"""Per-step wall time of an aeris-ds model in earth2studio's ``run.ensemble`` against ``aeris-ds forecast``.

    python tools/bench_earth2studio.py [--config small] [--members 4] [--steps 6] [--repeats 3] \
        [--weights W --store S] [--sampler project=false]

Both run the same weights, store, sampler, init time and members in this process, taking turns so that load
drift hits both alike, each writing its zarr store on disk (earth2studio's ZarrBackend; the forecast's store).
A step is timed from one network step to the next (``Forecaster.step``, which both call), so it holds
everything between steps — noise, forcings, conversions, writes — and none of the set-up; the first step of
a run is left out (warm-up). Without ``--weights`` a preset's network with random weights runs on a synthetic
store of its grid (the cost does not depend on the weights). Prints the median per-step time of each and the
ratio earth2studio ÷ forecast (issue 22: ≤ 1.05).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aeris_ds.config import load_config
from aeris_ds.data.source import WeatherSource
from aeris_ds.data.stats import compute_stats, save_stats
from aeris_ds.data.synthetic import synthetic_store
from aeris_ds.forecast.driver import Forecaster, run_forecast, sampler_overrides
from aeris_ds.interop.earth2studio import AERIS, AERISData  # before earth2studio: it imports it (fast path)
from aeris_ds.model.swin_dit import single_process_model
from aeris_ds.weights import canonical, save_weights


def synthetic(config: str, where: Path) -> tuple[Path, Path]:
    """A store of the preset's grid and channels with its stats, and random weights of its network."""
    cfg = load_config(config)
    store = synthetic_store(where / "store.zarr", cfg.grid.lat, cfg.grid.lon, days=8, levels=tuple(cfg.data.levels))
    save_stats(compute_stats(WeatherSource(store, cfg.data, "train"), progress=False), store)
    cfg = load_config(config, {"data": {"store": str(store)}})
    model, _ = single_process_model(cfg)
    torch.manual_seed(0)
    params = {canonical(n): torch.randn_like(p) / p.shape[-1] ** 0.5 for n, p in model.named_parameters()}
    weights = save_weights({"params": params, "ema": params}, where / "weights.pt",
                           {"config": cfg.model_dump(mode="json"), "objective": "diffusion"})
    return weights, store


class StepClock:
    """Times between successive calls of Forecaster.step (instrumentation of this benchmark only)."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self._step = Forecaster.step

        def step(fc: Forecaster, *args, **kwargs) -> torch.Tensor:
            self.starts.append(time.perf_counter())
            return self._step(fc, *args, **kwargs)

        Forecaster.step = step

    def per_step(self, end: float) -> list[float]:
        """Step durations of the run that just ended at ``end``, less its first step; then reset."""
        marks, self.starts = [*self.starts, end], []
        return list(np.diff(marks)[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small", help="preset of the synthetic run (without --weights)")
    parser.add_argument("--weights", help="weights.pt (with --store)")
    parser.add_argument("--store", help="store with the initial conditions and stats")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sampler", default="project=false",
                        help="overrides of the saved sampler (the synthetic store declares no spectral truncation)")
    args = parser.parse_args()
    from earth2studio import run  # after aeris_ds.interop.earth2studio, which imported it
    from earth2studio.io import ZarrBackend
    from earth2studio.perturbation import Zero

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights, store = (args.weights, args.store) if args.weights else synthetic(args.config, tmp)
        sampler = sampler_overrides(weights, args.sampler)
        model = AERIS.from_weights(weights, store, sampler, seed=0, compile=False)
        source = AERISData(store, weights)
        init = source.source.times[len(source.source.times) // 2]
        hours = args.steps * model.fc.cfg.data.lead_hours
        clock = StepClock()
        times: dict[str, list[float]] = {"aeris-ds forecast": [], "earth2studio run.ensemble": []}
        for r in range(args.repeats):
            run_forecast(weights, store, tmp / f"fc{r}.zarr", np.datetime_as_string(init, unit="h"), args.members,
                         f"{hours}h", sampler, seed=0, progress=False, compile=False)
            times["aeris-ds forecast"] += clock.per_step(time.perf_counter())
            run.ensemble([init], args.steps, args.members, model, source, ZarrBackend(str(tmp / f"e2s{r}.zarr")),
                         Zero(), device="cpu", verbose=False)
            times["earth2studio run.ensemble"] += clock.per_step(time.perf_counter())

    base, wrapped = (statistics.median(v) for v in times.values())
    print(f"weights={args.weights or f'{args.config} (random)'} members={args.members} steps={args.steps} "
          f"repeats={args.repeats} sampler={model.fc.sampler!r} threads={torch.get_num_threads()}")
    print("| path | s / step (median) | steps timed |\n|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.4f} | {len(values)} |")
    print(f"ratio earth2studio / forecast: {wrapped / base:.3f}")


if __name__ == "__main__":
    main()
