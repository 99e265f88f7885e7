"""Stability report for rollouts: what headline scores average away, with pass/fail criteria.

Autoregressive diffusion models fail in three ways here: blow-up (growing variance, NaN), smoothing
(lost small-scale power) and invented small scales (excess power, e.g. per-pixel noise left by the
sampler). Per lead, averaged over init times and members: drift of the global mean, the spatial std
ratio, and forecast ÷ truth zonal power in thirds of the wavenumbers; for an ensemble also the spread's
spectrum against the ensemble-mean error's. Long rollouts add spectra per wavenumber and the t850 drift.

Where the truth declares a spectral truncation (attrs ``spectral_truncation``: the data were made at T_N),
the judged bands are thirds of wavenumbers 1..N, and wavenumbers beyond N form a ``beyond`` band that is
reported but not judged: the truth has no dynamics there (only interpolation residue, ~1e-12 of its
power), so a ratio to it measures nothing but that residue.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from aeris_ds.evaluate.baselines import align_truth
from aeris_ds.evaluate.metrics import ensemble_mean, zonal_power_spectrum
from aeris_ds.evaluate.weights import Weighting, spatial_mean

LEAD, LEVEL, TIME, MEMBER, K = "prediction_timedelta", "level", "time", "number", "wavenumber"
BANDS = ("low", "mid", "high")
BLOW_UP_STD_RATIO = 1.5
POWER_RATIO_RANGE = (0.5, 2.0)
LONG_LEAD_DAYS = (30, 60, 90)
LONG_FIELDS = (("geopotential", 500.0), ("temperature", 850.0))
SPECTRUM_MIN_FRACTION = 1e-6
DRIFT_FIELD, DRIFT_LIMIT = ("temperature", 850.0), 1.0


@dataclass
class Criterion:
    """One pass/fail check; ``passed`` is None where it does not apply (e.g. a 5-day forecast's 90-day checks)."""

    name: str
    passed: bool | None
    detail: str

    def line(self) -> str:
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[self.passed]
        return f"{verdict} {self.name}: {self.detail}"


@dataclass
class StabilityReport:
    """Per-lead diagnostics, spectra, human-readable flags and pass/fail criteria."""

    diagnostics: xr.Dataset
    spectra: xr.Dataset
    flags: list[str] = field(default_factory=list)
    criteria: list[Criterion] = field(default_factory=list)

    def _flagged(self, kind: str) -> bool:
        return any(f.startswith(kind) for f in self.flags)

    @property
    def blow_up(self) -> bool:
        return self._flagged("blow-up")

    @property
    def smoothing(self) -> bool:
        return self._flagged("smoothing")

    @property
    def excess_power(self) -> bool:
        return self._flagged("excess power")

    @property
    def passed(self) -> bool:
        return all(c.passed is not False for c in self.criteria)


def band_power(spectrum: xr.DataArray, band: str, truncation: int | None = None) -> xr.DataArray:
    """Power summed over the low/mid/high third of wavenumbers 1..kmax (k = 0 is the zonal mean), kmax the
    truncation when given, else the largest wavenumber; ``beyond`` sums the wavenumbers above the truncation."""
    k, kmax = spectrum[K], int(spectrum[K].max())
    if band == "beyond":
        return spectrum.where(k > (kmax if truncation is None else truncation)).sum(K, skipna=True)
    edges = np.linspace(0, kmax if truncation is None else min(truncation, kmax), 4)
    lo, hi = {"low": edges[:2], "mid": edges[1:3], "high": edges[2:]}[band]
    return spectrum.where((k > lo) & (k <= hi)).sum(K, skipna=True)


def _levels(da: xr.DataArray) -> list:
    return list(da[LEVEL].values) if LEVEL in da.dims else [None]


def _label(name: str, level: float | None) -> str:
    return name if level is None else f"{name} level {level:g}"


def _first_lead_flags(kind: str, name: str, mask: xr.DataArray, value: xr.DataArray, label: str) -> list[str]:
    """One flag per (variable, level): the first lead where ``mask`` holds, with the offending value."""
    flags = []
    for level in _levels(mask):
        at = {} if level is None else {LEVEL: level}
        hits = np.flatnonzero(mask.sel(at).values)
        if hits.size:
            lead = mask[LEAD].values[hits[0]] / np.timedelta64(1, "h")
            flags.append(f"{kind}: {_label(name, level)} from lead {lead:g} h ({label} "
                         f"{float(value.sel(at).values[hits[0]]):.3g})")
    return flags


def _range_criterion(name: str, ratios: dict[str, xr.DataArray], lo: float = POWER_RATIO_RANGE[0],
                     hi: float = POWER_RATIO_RANGE[1], what: str = "ratio") -> Criterion:
    """All ``ratios`` (dims lead, [level], ...) within [lo, hi]; the detail names the worst value."""
    if not ratios:
        return Criterion(name, None, "no field to check")
    worst_label, worst_value, worst_badness, passed = "", np.nan, -1.0, True
    for label, ratio in ratios.items():
        values = ratio.values
        badness = np.where(np.isfinite(values) & (values > 0), np.abs(np.log(np.where(values > 0, values, 1))),
                           np.inf)
        passed &= bool(np.all((values >= lo) & (values <= hi)))
        i = int(np.argmax(badness))
        if badness.flat[i] > worst_badness:
            where = dict(zip(ratio.dims, np.unravel_index(i, values.shape), strict=True))
            parts = [f"{ratio[LEAD].values[where[LEAD]] / np.timedelta64(1, 'h'):g} h"]
            parts += [f"{d} {ratio[d].values[j]:g}" for d, j in where.items() if d != LEAD and d in ratio.coords]
            worst_label, worst_value, worst_badness = f"{label} ({', '.join(parts)})", values.flat[i], badness.flat[i]
    return Criterion(name, passed, f"{what} in [{lo:g}, {hi:g}]; worst {worst_value:.3g} at {worst_label}")


def _long_leads(leads: np.ndarray) -> np.ndarray:
    wanted = np.array(LONG_LEAD_DAYS) * np.timedelta64(24, "h")
    return leads[np.isin(leads, wanted)]


def _long_criteria(spectra: dict[str, xr.DataArray], diagnostics: dict[str, xr.DataArray],
                   leads: np.ndarray) -> list[Criterion]:
    at = _long_leads(leads)
    days = "/".join(f"{d:g}" for d in LONG_LEAD_DAYS)
    if at.size == 0:
        why = f"the forecast ends at {leads.max() / np.timedelta64(24, 'h'):g} d"
        return [Criterion(f"spectra within x2 of truth at days {days}", None, why),
                Criterion(f"band power ratios at days {days}", None, why)]
    per_k, bands = {}, {}
    for name, level in LONG_FIELDS:
        if name not in spectra or (LEVEL in spectra[name].dims) != (level is not None) or (
                level is not None and level not in spectra[name][LEVEL].values):
            continue
        spec = spectra[name].sel({LEAD: at, **({} if level is None else {LEVEL: level})})
        fc, tr = spec.sel(spectrum="forecast", drop=True), spec.sel(spectrum="truth", drop=True)
        variance = tr.sel({K: slice(1, None)}).sum(K)
        significant = (tr >= SPECTRUM_MIN_FRACTION * variance) & (tr[K] >= 1)
        per_k[_label(name, level)] = xr.where(significant, fc / tr, 1.0)  # 1 passes: only significant k count
        diag = diagnostics[name].sel({LEAD: at, **({} if level is None else {LEVEL: level})})
        for band in BANDS:
            bands[f"{_label(name, level)} {band}"] = diag.sel(diagnostic=f"power_ratio_{band}", drop=True)
    return [_range_criterion(f"spectra within x2 of truth at days {days}", per_k,
                             what=f"forecast/truth power per wavenumber carrying >= {SPECTRUM_MIN_FRACTION:g} of "
                                  "the zonal variance"),
            _range_criterion(f"band power ratios at days {days}", bands, what="forecast/truth band power")]


def stability_report(forecast: xr.Dataset, truth: xr.Dataset, *, weighting: Weighting = "area"
                     ) -> StabilityReport:
    """Per-lead drift, std ratio, power ratios per band and spectra, with flags and pass/fail criteria.

    Flags: blow-up where the forecast's spatial std exceeds the truth's by more than ``BLOW_UP_STD_RATIO``
    or any value is non-finite; smoothing / excess power where a band's power ratio leaves
    ``POWER_RATIO_RANGE``. Forecast statistics average over members and inits.
    """
    forecast = forecast.load()
    truncation = truth.attrs.get("spectral_truncation")
    truncation = None if truncation is None else int(truncation)
    aligned = align_truth(truth[list(forecast.data_vars)], forecast).load()
    reduce_fc = [d for d in (TIME, MEMBER) if d in forecast.dims]
    m = forecast.sizes.get(MEMBER, 1)
    diagnostics, spectra, flags = {}, {}, []
    bounded, power, spread_error, beyond = {}, {}, {}, {}
    bands = BANDS if truncation is None else (*BANDS, "beyond")
    lo, hi = POWER_RATIO_RANGE
    for name in map(str, forecast.data_vars):
        fc, tr = forecast[name], aligned[name]
        fc_mean, tr_mean = spatial_mean(fc, weighting), spatial_mean(tr, weighting)
        fc_var = spatial_mean((fc - fc_mean) ** 2, weighting).mean(reduce_fc)
        tr_var = spatial_mean((tr - tr_mean) ** 2, weighting).mean(TIME)
        std_ratio = np.sqrt(fc_var / tr_var)
        nonfinite = (~np.isfinite(fc)).mean([d for d in fc.dims if d not in (LEAD, LEVEL)])
        spec = {"forecast": zonal_power_spectrum(fc, weighting=weighting),
                "truth": zonal_power_spectrum(tr, weighting=weighting)}
        if m >= 2:  # spread power with ddof=1 and the finite-ensemble factor: (M/(M-1)) * ((M+1)/M)
            mean = ensemble_mean(fc)
            spec["spread"] = zonal_power_spectrum(fc - mean, weighting=weighting) * (m + 1) / (m - 1)
            spec["error"] = zonal_power_spectrum(mean - tr, weighting=weighting)
        rows = {"mean_drift": fc_mean.mean(reduce_fc) - tr_mean.mean(TIME), "std_ratio": std_ratio,
                "nonfinite_fraction": nonfinite}
        for band in bands:
            ratio = band_power(spec["forecast"], band, truncation) / band_power(spec["truth"], band, truncation)
            rows[f"power_ratio_{band}"] = ratio
            if band == "beyond":  # reported, not judged (module docstring)
                beyond[name] = ratio
                continue
            power[f"{name} {band}"] = ratio
            flags += _first_lead_flags("smoothing", name, ratio < lo, ratio, f"{band}-k power ratio")
            flags += _first_lead_flags("excess power", name, ratio > hi, ratio, f"{band}-k power ratio")
            if m >= 2:
                ratio = band_power(spec["spread"], band, truncation) / band_power(spec["error"], band, truncation)
                rows[f"spread_error_ratio_{band}"] = spread_error[f"{name} {band}"] = ratio
        diagnostics[name] = xr.concat([r.drop_attrs() for r in rows.values()], pd.Index(list(rows), name="diagnostic"),
                                      coords="minimal", compat="override")
        spectra[name] = xr.concat([s.drop_attrs() for s in spec.values()], pd.Index(list(spec), name="spectrum"),
                                  coords="minimal", compat="override")
        blow = (std_ratio > BLOW_UP_STD_RATIO) | (nonfinite > 0) | ~np.isfinite(std_ratio)
        flags += _first_lead_flags("blow-up", name, blow, std_ratio, "std ratio")
        bounded[name] = xr.where(nonfinite > 0, np.nan, std_ratio)
    leads = forecast[LEAD].values
    criteria = [
        _range_criterion("bounded", bounded, 0.0, BLOW_UP_STD_RATIO, "finite, spatial std ratio"),
        _range_criterion("band power ratios", power, what="forecast/truth zonal power per third of wavenumbers"),
        _range_criterion("spread spectrum vs error spectrum", spread_error,
                         what="spread power x (M+1)/M / ensemble-mean error power per third of wavenumbers")
        if m >= 2 else Criterion("spread spectrum vs error spectrum", None, "one member"),
        *_long_criteria(spectra, diagnostics, leads),
    ]
    if truncation is not None:
        measured = _range_criterion("", beyond, what="").detail.split("; ", 1)[1]
        criteria.append(Criterion(f"power beyond T{truncation} (not judged)", None,
                                  f"the truth declares spectral truncation T{truncation}: above it it holds only "
                                  f"interpolation residue; forecast/truth power there, {measured}"))
    name, level = DRIFT_FIELD
    if name in diagnostics and LEVEL in diagnostics[name].dims and level in diagnostics[name][LEVEL].values:
        drift = diagnostics[name].sel(diagnostic="mean_drift", **{LEVEL: level})
        worst = int(np.nanargmax(np.abs(drift.values))) if np.isfinite(drift.values).any() else 0
        passed = bool(np.all(np.abs(drift.values) < DRIFT_LIMIT))
        criteria.append(Criterion(f"global-mean {_label(name, level)} drift", passed,
                                  f"|drift| < {DRIFT_LIMIT:g} K at every lead; worst {float(drift[worst]):.3g} K "
                                  f"at {leads[worst] / np.timedelta64(1, 'h'):g} h"))
    else:
        criteria.append(Criterion(f"global-mean {_label(name, level)} drift", None, "not scored"))
    ds = xr.Dataset(diagnostics)
    ds.attrs["definition"] = (
        f"per lead, averaged over init times and members, spatial means with {weighting} weights: "
        "mean_drift = global mean(forecast) - global mean(truth); std_ratio = sqrt(spatial variance ratio); "
        "power_ratio_<band> = zonal power of the forecast / truth summed over the low/mid/high third of "
        f"wavenumbers 1..{'kmax' if truncation is None else truncation}"
        f"{'' if truncation is None else f' (beyond: above T{truncation}, not judged)'}; "
        "spread_error_ratio_<band> = the same for the spread (members minus ensemble mean, "
        "x (M+1)/(M-1): ddof=1 and the finite-ensemble factor) / the ensemble-mean error; flags: blow-up if "
        f"std_ratio > {BLOW_UP_STD_RATIO} or non-finite, smoothing / excess power if a power ratio < {lo:g} / > {hi:g}")
    return StabilityReport(ds, xr.Dataset(spectra), flags, criteria)
