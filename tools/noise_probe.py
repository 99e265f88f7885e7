"""Where the grid-scale noise comes from: forecast ÷ truth zonal power per wavenumber after a few steps,
for sampler variants on the same weights, initial states and noise (cheap: seconds per variant).

    python tools/noise_probe.py --weights runs/demo/weights.pt --store data/heldsuarez.zarr \
        --variant preset= --variant one-level=steps=1 --variant project=project=true

Prints one line per (variant, step, field): the ratio at selected wavenumbers k (global, area-weighted,
averaged over inits and members), the same spectrum definition as the stability report.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import xarray as xr

from aeris_ds.evaluate.metrics import zonal_power_spectrum
from aeris_ds.forecast.driver import Forecaster, pick_init_times, sampler_overrides
from aeris_ds.forecast.rollout import member_generator

FIELDS = {"z500": ("geopotential", 500), "t850": ("temperature", 850), "u250": ("u_component_of_wind", 250)}
KS = (1, 4, 8, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 26, 32)


def spectrum(field: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    da = xr.DataArray(field.reshape(-1, lat.size, lon.size), dims=("number", "latitude", "longitude"),
                      coords={"latitude": lat, "longitude": lon})
    return zonal_power_spectrum(da).values


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--variant", action="append", default=[], help="NAME=KEY=VALUE,… (sampler overrides)")
    p.add_argument("--init-times", default="test:2")
    p.add_argument("--members", type=int, default=2)
    p.add_argument("--steps", type=int, default=1)
    args = p.parse_args(argv)
    for variant in args.variant or ["saved="]:
        name, _, overrides = variant.partition("=")
        fc = Forecaster(args.weights, args.store, sampler_overrides(args.weights, overrides))
        inits = pick_init_times(fc.source, args.init_times, args.steps)
        rows = [(i, m) for i in inits for m in range(args.members)]
        state = torch.stack([fc.initial_state(i) for i, _ in rows])
        lat, lon = fc.source.lat[fc.real], fc.source.lon
        for k in range(1, args.steps + 1):
            gens = [member_generator(0, fc.source.times[i], m, k) for i, m in rows]
            with torch.no_grad():
                state = fc.step(state, gens, np.array([fc.source.times[i] + k * fc.lead for i, _ in rows]))
            phys = fc.to_physical(state)
            for label, (var, level) in FIELDS.items():
                at = dict(level=level) if "level" in fc.source.ds[var].dims else {}
                truth = np.stack([fc.source.ds[var].sel(at).isel(time=i + k * fc.source.lead_steps).values
                                  for i in inits])
                lev = list(fc.cfg.data.levels).index(level)
                ratio = spectrum(phys[var][:, lev], lat, lon) / spectrum(truth, lat, lon)
                print(f"{name:>14} step {k} {label}: " + " ".join(f"k{q}={ratio[q]:.3g}" for q in KS), flush=True)


if __name__ == "__main__":
    main()
