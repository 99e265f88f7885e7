"""Evaluation figures (matplotlib, Agg backend): each function writes one PNG and returns its path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from aeris_ds.evaluate.metrics import ensemble_mean, zonal_power_spectrum  # noqa: E402
from aeris_ds.evaluate.weights import Weighting  # noqa: E402

LEAD, LEVEL, MEMBER, TIME = "prediction_timedelta", "level", "number", "time"


def _hours(leads: np.ndarray) -> np.ndarray:
    return np.asarray(leads) / np.timedelta64(1, "h")


def _at_level(da: xr.DataArray, level: float | None) -> xr.DataArray:
    """Pick ``level`` when the variable has levels; fail clearly if a level is needed but missing."""
    if LEVEL not in da.dims:
        return da
    if level is None:
        raise ValueError(f"{da.name} has levels {da[LEVEL].values.tolist()}; pass level=")
    return da.sel({LEVEL: level})


def _title(variable: str, level: float | None) -> str:
    return variable if level is None else f"{variable} {level:g}"


def _save(fig: plt.Figure, out_path: str | Path) -> Path:
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_skill_vs_lead(scores: xr.Dataset, variable: str, out_path: str | Path, *,
                       level: float | None = None) -> Path:
    """RMSE, ACC and CRPS vs lead for the forecast and both baselines (scores from ``score``)."""
    da = _at_level(scores[variable], level)
    hours = _hours(da[LEAD].values)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, metric in zip(axes, ("rmse", "acc", "crps"), strict=True):
        for system in da["system"].values:
            ax.plot(hours, da.sel(system=system, metric=metric), marker="o", ms=3, label=str(system))
        ax.set(xlabel="lead (h)", title=f"{metric.upper()} {_title(variable, level)}")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"weighting: {scores.attrs.get('weighting', '?')}", fontsize=8)
    return _save(fig, out_path)


def plot_spread_skill(scores: xr.Dataset, variable: str, out_path: str | Path, *,
                      level: float | None = None) -> Path:
    """Ensemble spread and ensemble-mean RMSE vs lead, and their ratio (1 = calibrated)."""
    da = _at_level(scores[variable], level).sel(system="forecast")
    hours = _hours(da[LEAD].values)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(hours, da.sel(metric="rmse"), marker="o", ms=3, label="RMSE of ensemble mean")
    left.plot(hours, da.sel(metric="spread"), marker="o", ms=3, label="spread")
    right.plot(hours, da.sel(metric="spread_skill"), marker="o", ms=3, label="spread/skill")
    right.plot(hours, da.sel(metric="spread_skill_corrected"), ls="--", label="× sqrt((M+1)/M)")
    right.axhline(1.0, color="k", lw=0.8)
    for ax, title in ((left, "spread and skill"), (right, "spread/skill ratio")):
        ax.set(xlabel="lead (h)", title=f"{title} {_title(variable, level)}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out_path)


def plot_spectra(forecast: xr.Dataset, truth: xr.Dataset, variable: str, out_path: str | Path, *,
                 leads: Sequence[np.timedelta64], level: float | None = None,
                 weighting: Weighting = "area") -> Path:
    """Zonal power spectra of forecast members (solid) and aligned truth (dashed) at a few leads."""
    fc = zonal_power_spectrum(_at_level(forecast[variable], level), weighting=weighting)
    tr = zonal_power_spectrum(_at_level(truth[variable], level), weighting=weighting)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    k = fc["wavenumber"].values[1:]
    for i, lead in enumerate(leads):
        color = f"C{i}"
        label = f"{_hours(lead):g} h"
        ax.loglog(k, fc.sel({LEAD: lead}).values[1:], color=color, label=f"forecast {label}")
        ax.loglog(k, tr.sel({LEAD: lead}).values[1:], color=color, ls="--", label=f"truth {label}")
    ax.set(xlabel="zonal wavenumber", ylabel="power", title=f"zonal spectra {_title(variable, level)}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return _save(fig, out_path)


def plot_maps(forecast: xr.Dataset, truth: xr.Dataset, variable: str, out_path: str | Path, *,
              leads: Sequence[np.timedelta64], level: float | None = None, init_index: int = 0,
              member: int = 0) -> Path:
    """Maps of truth, ensemble mean, one member and ensemble spread for one init time at a few leads."""
    fc = _at_level(forecast[variable], level).isel({TIME: init_index})
    tr = _at_level(truth[variable], level).isel({TIME: init_index})
    has_members = MEMBER in fc.dims
    panels = {
        "truth": tr,
        "ensemble mean": ensemble_mean(fc),
        f"member {member}": fc.isel({MEMBER: member}) if has_members else fc,
        "spread (std, ddof=1)": fc.std(MEMBER, ddof=1) if has_members and fc.sizes[MEMBER] > 1 else None,
    }
    fig, axes = plt.subplots(len(leads), 4, figsize=(16, 2.6 * len(leads)), squeeze=False)
    lim = float(tr.min()), float(tr.max())
    for row, lead in zip(axes, leads, strict=True):
        for ax, (name, field) in zip(row, panels.items(), strict=True):
            ax.set_title(f"{name}, {_hours(lead):g} h", fontsize=9)
            if field is None:
                ax.set_axis_off()
                continue
            values = field.sel({LEAD: lead}).transpose("latitude", "longitude")
            kw = {} if name.startswith("spread") else {"vmin": lim[0], "vmax": lim[1]}
            mesh = ax.pcolormesh(values["longitude"].values, values["latitude"].values, values.values,
                                 shading="auto", **kw)
            ax.set(xticks=[], yticks=[])
            fig.colorbar(mesh, ax=ax, shrink=0.8)
    fig.suptitle(f"{_title(variable, level)}, init {str(fc[TIME].values)[:16]}")
    return _save(fig, out_path)
