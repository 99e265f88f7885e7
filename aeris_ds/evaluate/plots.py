"""Evaluation figures (matplotlib, Agg backend): each function writes one PNG and returns its path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from aeris_ds.evaluate.metrics import ensemble_mean  # noqa: E402
from aeris_ds.evaluate.weights import Weighting, latitude_weights  # noqa: E402

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
    fig.savefig(path, dpi=80, bbox_inches="tight")  # nothing cut off at the edges
    plt.close(fig)
    return path


def _band(ax: plt.Axes, hours: np.ndarray, da: xr.DataArray, **kw) -> None:
    """The value as a line and, when the scores carry one, its bootstrap interval as a shaded band."""
    line, = ax.plot(hours, da.sel(estimate="value"), marker="o", ms=3, **kw)
    ax.fill_between(hours, da.sel(estimate="lo"), da.sel(estimate="hi"), color=line.get_color(), alpha=0.2, lw=0)


def _ci_note(scores: xr.Dataset) -> str:
    return f"bands: {scores.attrs.get('bootstrap', '')}; weighting: {scores.attrs.get('weighting', '?')}"


def plot_skill_vs_lead(scores: xr.Dataset, variable: str, out_path: str | Path, *,
                       level: float | None = None) -> Path:
    """RMSE, RMSE ratios to the baselines, ACC and CRPS vs lead, with bootstrap bands over init times."""
    da = _at_level(scores[variable], level)
    hours = _hours(da[LEAD].values)
    # One colour per system in every panel (the ratio panel leaves persistence out).
    colors = {str(s): f"C{i}" for i, s in enumerate(da["system"].values)}
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    for ax, metric in zip(axes, ("rmse", "rmse_ratio_persistence", "acc", "crps"), strict=True):
        systems = ["forecast", "climatology"] if metric == "rmse_ratio_persistence" else da["system"].values
        for system in systems:
            _band(ax, hours, da.sel(system=system, metric=metric), label=str(system), color=colors[str(system)])
        if metric == "rmse_ratio_persistence":
            ax.axhline(1.0, color="k", lw=0.8)
        ax.set(xlabel="lead (h)", title=f"{metric.replace('_', ' ')} {_title(variable, level)}")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(_ci_note(scores), fontsize=7)
    return _save(fig, out_path)


def plot_spread_skill(scores: xr.Dataset, variable: str, out_path: str | Path, *,
                      level: float | None = None) -> Path:
    """Ensemble spread and ensemble-mean RMSE vs lead, and their ratio (1 = calibrated), with bands."""
    da = _at_level(scores[variable], level).sel(system="forecast")
    hours = _hours(da[LEAD].values)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    _band(left, hours, da.sel(metric="rmse"), label="RMSE of ensemble mean")
    _band(left, hours, da.sel(metric="spread"), label="spread")
    _band(right, hours, da.sel(metric="spread_skill"), label="spread/skill")
    _band(right, hours, da.sel(metric="spread_skill_corrected"), ls="--", label="× sqrt((M+1)/M)")
    right.axhline(1.0, color="k", lw=0.8)
    for ax, title in ((left, "spread and skill"), (right, "spread/skill ratio")):
        ax.set(xlabel="lead (h)", title=f"{title} {_title(variable, level)}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(_ci_note(scores), fontsize=7)
    return _save(fig, out_path)


def plot_rank_histogram(ranks: xr.Dataset, variable: str, out_path: str | Path, *,
                        leads: Sequence[np.timedelta64], level: float | None = None) -> Path:
    """Rank histograms at a few leads with their bootstrap intervals; the dashed line is flat."""
    da = _at_level(ranks[variable], level)
    fig, axes = plt.subplots(1, len(leads), figsize=(3.6 * len(leads), 3.2), squeeze=False, sharey=True)
    k = da["rank"].values
    for ax, lead in zip(axes[0], leads, strict=True):
        at = da.sel({LEAD: lead})
        value = at.sel(estimate="value").values
        err = np.abs(np.stack([at.sel(estimate="lo").values, at.sel(estimate="hi").values]) - value)
        ax.bar(k, value, yerr=err, color="C0", alpha=0.7, error_kw={"lw": 0.8})
        ax.axhline(1 / k.size, color="k", ls="--", lw=0.8)
        ax.set(xlabel="rank of truth", title=f"{_title(variable, level)}, {_hours(lead):g} h")
    axes[0][0].set_ylabel("area fraction")
    fig.suptitle(f"bars: {ranks.attrs.get('bootstrap', '')}", fontsize=7)
    return _save(fig, out_path)


def plot_spectra(spectra: xr.Dataset, variable: str, out_path: str | Path, *,
                 leads: Sequence[np.timedelta64], level: float | None = None) -> Path:
    """Zonal power spectra by lead: forecast members (solid) and truth (dashed) on the left; on the right
    forecast ÷ truth and, for an ensemble, spread ÷ ensemble-mean error per wavenumber, with the ×2 band.

    ``spectra`` is a stability report's (dims spectrum, prediction_timedelta, [level], wavenumber).
    """
    spec = _at_level(spectra[variable], level).sel(wavenumber=slice(1, None))
    k = spec["wavenumber"].values
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(leads)))
    names = spec["spectrum"].values.tolist()
    for color, lead in zip(colors, leads, strict=True):
        at = spec.sel({LEAD: lead})
        label = f"{_hours(lead):g} h"
        left.loglog(k, at.sel(spectrum="forecast"), color=color, label=f"forecast {label}")
        left.loglog(k, at.sel(spectrum="truth"), color=color, ls="--", lw=0.8)
        right.semilogy(k, at.sel(spectrum="forecast") / at.sel(spectrum="truth"), color=color, label=label)
        if "spread" in names:
            right.semilogy(k, at.sel(spectrum="spread") / at.sel(spectrum="error"), color=color, ls=":")
    for bound in (0.5, 1.0, 2.0):
        right.axhline(bound, color="k", lw=0.8 if bound == 1 else 0.5, ls="-" if bound == 1 else "--")
    left.set(xlabel="zonal wavenumber", ylabel="power", title=f"zonal spectra {_title(variable, level)} "
             "(dashed: truth)")
    right.set(xlabel="zonal wavenumber", ylabel="ratio", xscale="log",
              title="forecast/truth (solid), spread/error (dotted)")
    for ax in (left, right):
        ax.grid(alpha=0.3, which="both")
    left.legend(fontsize=7)
    return _save(fig, out_path)


def _uniform(x: np.ndarray) -> bool:
    return x.size > 1 and bool(np.allclose(np.diff(x), x[1] - x[0]))


def _map(ax: plt.Axes, field: xr.DataArray, **kw) -> plt.cm.ScalarMappable:
    """A lat/lon map at its true aspect (1° of latitude = 1° of longitude), labelled in degrees."""
    lat, lon = field["latitude"].values, field["longitude"].values
    values = field.transpose("latitude", "longitude").values
    if _uniform(lat) and _uniform(lon):  # an image draws ~10x faster than a mesh of cells
        dlat, dlon = lat[1] - lat[0], lon[1] - lon[0]
        south, north = sorted((lat[0] - dlat / 2, lat[-1] + dlat / 2))
        mesh = ax.imshow(values, origin="lower" if dlat > 0 else "upper", interpolation="nearest",
                         extent=(lon[0] - dlon / 2, lon[-1] + dlon / 2, south, north), **kw)
    else:
        mesh = ax.pcolormesh(lon, lat, values, shading="auto", **kw)
    ax.set_aspect("equal")
    ax.set(xticks=np.arange(0, 361, 90), yticks=np.arange(-90, 91, 45), xlim=(0, 360), ylim=(-90, 90))
    ax.tick_params(labelsize=7)
    return mesh


def plot_maps(forecast: xr.Dataset, truth: xr.Dataset, variable: str, out_path: str | Path, *,
              leads: Sequence[np.timedelta64], level: float | None = None, init_index: int = 0,
              member: int = 0) -> Path:
    """Maps of truth, ensemble mean, one member and ensemble spread for one init time at a few leads."""
    fc = _at_level(forecast[variable], level).isel({TIME: init_index}).sel({LEAD: list(leads)}).load()
    tr = _at_level(truth[variable], level).isel({TIME: init_index}).sel({LEAD: list(leads)}).load()
    has_members = MEMBER in fc.dims
    panels = {
        "truth": tr,
        "ensemble mean": ensemble_mean(fc),
        f"member {member}": fc.isel({MEMBER: member}) if has_members else fc,
        "spread (std, ddof=1)": fc.std(MEMBER, ddof=1) if has_members and fc.sizes[MEMBER] > 1 else None,
    }
    fig, axes = plt.subplots(len(leads), 4, figsize=(16, 2.5 * len(leads) + 0.6), squeeze=False,
                             layout="constrained")
    lim = float(tr.min()), float(tr.max())
    for row, lead in zip(axes, leads, strict=True):
        for ax, (name, field) in zip(row, panels.items(), strict=True):
            ax.set_title(f"{name}, {_hours(lead):g} h", fontsize=9)
            if field is None:
                ax.set_axis_off()
                continue
            kw = {} if name.startswith("spread") else {"vmin": lim[0], "vmax": lim[1]}
            fig.colorbar(_map(ax, field.sel({LEAD: lead}), **kw), ax=ax, shrink=0.8)
    for ax in axes[-1]:
        ax.set_xlabel("longitude (°E)", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("latitude (°N)", fontsize=8)
    fig.suptitle(f"{_title(variable, level)}, init {str(fc[TIME].values)[:16]}")
    return _save(fig, out_path)


def plot_hovmoller(forecast: xr.Dataset, truth: xr.Dataset, climatology: xr.Dataset, variable: str,
                   out_path: str | Path, *, level: float | None = None, lat_band: tuple[float, float] = (35, 65),
                   init_index: int = 0, member: int = 0, weighting: Weighting = "area") -> Path:
    """Hovmöller (longitude × lead) of anomalies from climatology, latitude-weighted over ``lat_band``:
    truth beside one member, for one init time. Waves should keep travelling in the member as in the truth."""
    def band_anomaly(field: xr.DataArray) -> xr.DataArray:
        rows = (field["latitude"] >= lat_band[0]) & (field["latitude"] <= lat_band[1])
        w = latitude_weights(field["latitude"], weighting).where(rows, 0.0)
        return (field * w).sum("latitude") / w.sum()

    fc = _at_level(forecast[variable], level).isel({TIME: init_index})
    fc = fc.isel({MEMBER: member}) if MEMBER in fc.dims else fc
    tr = _at_level(truth[variable], level).isel({TIME: init_index})
    clim = _at_level(climatology[variable], level).isel({TIME: init_index})
    if MEMBER in clim.dims:
        clim = clim.isel({MEMBER: 0})
    panels = {"truth": band_anomaly(tr - clim).load(), f"member {member}": band_anomaly(fc - clim).load()}
    lim = max(float(abs(p).max()) for p in panels.values()) or 1.0
    fig, axes = plt.subplots(1, 2, figsize=(10, 5), sharey=True, layout="constrained")
    for ax, (name, field) in zip(axes, panels.items(), strict=True):
        mesh = ax.pcolormesh(field["longitude"].values, _hours(field[LEAD].values) / 24,
                             field.transpose(LEAD, "longitude").values, shading="auto", cmap="RdBu_r",
                             vmin=-lim, vmax=lim)
        ax.set(xlabel="longitude (°E)", title=name, xticks=np.arange(0, 361, 90))
    axes[0].set_ylabel("lead (days)")
    fig.colorbar(mesh, ax=axes, shrink=0.8, label="anomaly from climatology")
    fig.suptitle(f"{_title(variable, level)} anomalies, latitudes {lat_band[0]}..{lat_band[1]}, "
                 f"init {str(tr[TIME].values)[:16]}", fontsize=9)
    return _save(fig, out_path)
