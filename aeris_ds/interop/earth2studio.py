"""aeris-ds inside earth2studio 0.19 (extra ``aeris-ds[earth2studio]``): any ``weights.pt`` as a prognostic model,
any store aeris-ds reads as a data source, and earth2studio's forecast output back in the layout ``aeris-ds
evaluate`` scores. earth2studio is imported here only.

Coordinates follow earth2studio: ``[leading dims…, time, lead_time, variable, lat, lon]``, variables by lexicon
name (``z500``, ``t850``, ``t2m``, ``msl``: earth2studio's WB2Lexicon over the config's WeatherBench2 names and
levels), on the model's grid (latitude ascending, longitude in [0, 360), the store's rows only, as forecast
stores hold them). A step is ``Forecaster.step`` through ``forecast.rollout.advance``: the sampler, forcings and
per-member generators of ``aeris-ds forecast``. Row (init time t, member m) draws its noise from
``member_generator(seed, t, m, step)`` alone (and its random-field perturbations, if the sampler sets them, from
(seed, t, m // 2, step)), so member m of an earth2studio run (the ``ensemble`` coordinate of
``run.ensemble``) is member m of ``aeris-ds forecast --seed SEED``; without an ``ensemble`` dimension the rows
are members ``member``, ``member`` + 1, … in the order of the leading dims (one row: ``member``).
"""

from __future__ import annotations

import inspect
import re
import sys
from collections import OrderedDict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from aeris_ds.config import DataConfig, ExperimentConfig, SamplerConfig, load_config
from aeris_ds.data.embedded import DEFAULT_STORE
from aeris_ds.data.source import WeatherSource
from aeris_ds.diffusion.consistency import ConsistencySampler
from aeris_ds.errors import ConfigError, DataError
from aeris_ds.forecast.driver import Forecaster, sampler_overrides
from aeris_ds.forecast.rollout import advance
from aeris_ds.weights import load_weights, objective_of


def _import_earth2studio() -> None:
    """Import earth2studio with a cheap ``inspect.stack``.

    earth2studio 0.19 calls ``inspect.stack()`` about 200 times while importing (utils/imports.py, to key optional
    dependencies by the calling file); each call reads the source of every frame and scans sys.modules, ~35 s of a
    loaded 2-core CPU in all (~7 s with this). Frames keep their file, line and function; only the source context
    (None here) is skipped, and only during this import."""
    if "earth2studio.run" in sys.modules:
        return

    def stack(context: int = 1) -> list[inspect.FrameInfo]:
        frame, frames = sys._getframe(1), []
        while frame is not None:
            code = frame.f_code
            frames.append(inspect.FrameInfo(frame, code.co_filename, frame.f_lineno, code.co_name, None, None))
            frame = frame.f_back
        return frames

    original, inspect.stack = inspect.stack, stack
    try:
        import earth2studio.run  # noqa: F401  (the workflows users call next: imported once, here)
    finally:
        inspect.stack = original


_import_earth2studio()
from earth2studio.lexicon.wb2 import WB2Lexicon  # noqa: E402
from earth2studio.utils.time import to_time_array  # noqa: E402

CoordSystem = OrderedDict  # earth2studio's: dim name → coordinate values, in the tensor's dim order
GRID_ATOL = 1e-4  # degrees: float32 and float64 spellings of one grid agree to ~1e-5
_WB2_OF = {name: (key.split("::")[0], int(key.split("::")[1]) if key.split("::")[1] else None)
           for name, key in WB2Lexicon.VOCAB.items()}
_NAME_OF = {wb2: name for name, wb2 in _WB2_OF.items()}
# lexicon prefix of each level variable (z, t, u, …), so levels beyond WB2's 13 get names of the same form
_PREFIX = {var: name[: -len(str(level))] for name, (var, level) in _WB2_OF.items() if level is not None}


def lexicon_name(variable: str, level: int | None) -> str:
    """earth2studio's name of a WeatherBench2 variable (at a level): ``geopotential``, 500 → ``z500``."""
    name = _NAME_OF.get((variable, level))
    if name is None and level is not None and variable in _PREFIX:
        name = f"{_PREFIX[variable]}{level}"
    if name is None:
        raise ConfigError(f"{variable}{'' if level is None else f' at {level} hPa'} has no earth2studio lexicon "
                          "name (earth2studio.lexicon.WB2Lexicon)")
    return name


def wb2_of(name: str) -> tuple[str, int | None]:
    """lexicon_name's inverse: ``z500`` → (``geopotential``, 500), ``t2m`` → (``2m_temperature``, None)."""
    if name in _WB2_OF:
        return _WB2_OF[name]
    match = re.fullmatch(r"([a-z]+)(\d+)", name)
    by_prefix = {p: v for v, p in _PREFIX.items()}
    if match and match[1] in by_prefix:
        return by_prefix[match[1]], int(match[2])
    raise DataError(f"earth2studio variable {name!r} has no WeatherBench2 name (earth2studio.lexicon.WB2Lexicon)")


def channel_names(data: DataConfig) -> list[str]:
    """The lexicon names of a config's channels, in its channel order (atmospheric × levels, then surface)."""
    return [lexicon_name(v, lev) for v in data.atmospheric for lev in data.levels] + \
           [lexicon_name(v, None) for v in data.surface]


def _config(config: ExperimentConfig | str | Path) -> ExperimentConfig:
    """A config, a preset name or YAML path, or a weights.pt (the config it was trained with)."""
    if isinstance(config, ExperimentConfig):
        return config
    if str(config).endswith(".pt"):
        return ExperimentConfig(**load_weights(config)["meta"]["config"])
    return load_config(config)


def _store(store: str | Path | None, cfg: ExperimentConfig) -> Path:
    """The store given, else the config's data.store, else the embedded Held–Suarez data."""
    return Path(store or cfg.data.store or DEFAULT_STORE)


def _span(values: np.ndarray) -> str:
    return f"{len(values)} values {values[0]:g}..{values[-1]:g}" if len(values) else "no values"


class AERISData:
    """An earth2studio data source over a store aeris-ds reads (embedded data, a WeatherBench2 zarr, an ingested
    ERA5 store), as the config's reader sees it: ``data.grid_adapt`` applied, latitude ascending, longitude in
    [0, 360), the store's rows only, the config's channels by lexicon name. Reads nothing over the network."""

    def __init__(self, store: str | Path | None, config: ExperimentConfig | str | Path) -> None:
        """``config``: an ExperimentConfig, a preset name or YAML path, or a weights.pt (its training config);
        ``store`` None: the config's data.store (else the embedded data)."""
        self.cfg = cfg = _config(config)
        self.path = _store(store, cfg)
        self.source = WeatherSource(self.path, cfg.data, grid=(cfg.grid.lat, cfg.grid.lon))
        self.variables = channel_names(cfg.data)
        real = self.source.grid.real
        self.rows = np.arange(real.start, real.stop)
        self.lat, self.lon = self.source.lat[real], self.source.lon

    def __call__(self, time: datetime | list[datetime] | np.ndarray,
                 variable: str | list[str] | np.ndarray) -> xr.DataArray:
        """[time, variable, lat, lon] float32 in physical units; a DataError names a time or variable the store
        (as this config reads it) lacks."""
        times = to_time_array([time] if isinstance(time, datetime | np.datetime64 | str) else time)
        names = [variable] if isinstance(variable, str) else [str(v) for v in variable]
        unknown = [v for v in names if v not in self.variables]
        if unknown:
            raise DataError(f"{self.path} read with config {self.cfg.name} has no variable(s) {unknown}; it has "
                            f"{', '.join(self.variables)}")
        index = [np.flatnonzero(self.source.times == t) for t in times]
        missing = [str(t) for t, i in zip(times, index, strict=True) if not i.size]
        if missing:
            span = np.datetime_as_string(self.source.times[[0, -1]], unit="h")
            raise DataError(f"time(s) {missing} not in {self.path} (it holds {span[0]}..{span[1]})")
        field = self.source.read_times(np.array([i[0] for i in index]), self.rows, np.arange(len(self.lon)))
        field = field[:, [self.variables.index(v) for v in names]]
        return xr.DataArray(field, dims=("time", "variable", "lat", "lon"),
                            coords={"time": times, "variable": np.array(names), "lat": self.lat, "lon": self.lon})

    async def fetch(self, time: datetime | list[datetime] | np.ndarray,
                    variable: str | list[str] | np.ndarray) -> xr.DataArray:
        """The async form of earth2studio's DataSource protocol (a local read: no await needed)."""
        return self(time, variable)


class AERIS:
    """An aeris-ds model as an earth2studio prognostic model (``PrognosticModel`` of 0.19): one step of Δt =
    ``data.lead_hours`` per call, history 1, on the grid and channels of the config it was trained with."""

    def __init__(self, forecaster: Forecaster, seed: int = 0, member: int = 0, name: str = "") -> None:
        self.fc, self.seed, self.member = forecaster, seed, member
        self.name = name or forecaster.cfg.name
        self.variables = np.array(channel_names(forecaster.cfg.data))
        self.lat, self.lon = forecaster.source.lat[forecaster.real], forecaster.source.lon
        self.dt = forecaster.lead
        self.device = torch.device("cpu")

    @classmethod
    def from_weights(cls, path: str | Path, store: str | Path | None = None,
                     sampler: SamplerConfig | ConsistencySampler | str | None = None, seed: int = 0,
                     member: int = 0, use_ema: bool = True, compile: bool | None = None) -> AERIS:
        """The model in ``path`` (diffusion, consistency or crps_finetune weights) with the normalisation, grid and
        forcings of ``store`` (None: the config's data.store, else the embedded data), as ``aeris-ds forecast
        --weights path --store store --seed seed`` builds it.

        ``sampler``: a SamplerConfig or ConsistencySampler, or ``"steps=5,sigma_min=0.02"`` overrides of the
        saved one as ``--sampler`` takes them; None: the saved diffusion sampler, or one consistency step for a
        one-step model (``--consistency-steps 1``)."""
        if isinstance(sampler, str):
            sampler = sampler_overrides(path, sampler)
        saved = load_weights(path)
        if sampler is None and objective_of(saved) != "diffusion":
            sampler = ConsistencySampler(1)
        cfg = ExperimentConfig(**saved["meta"]["config"])
        return cls(Forecaster(path, _store(store, cfg), sampler, use_ema, compile), seed, member,
                   f"{cfg.name} ({path})")

    def data_source(self, store: str | Path | None = None) -> AERISData:
        """This model's store (or another of the same grid and channels) as an earth2studio data source."""
        return AERISData(store or self.fc.source.path, self.fc.cfg)

    def to(self, device: torch.device | str) -> AERIS:
        self.device = torch.device(device)
        self.fc.to(self.device)
        return self

    def input_coords(self) -> CoordSystem:
        return OrderedDict(batch=np.empty(0), time=np.empty(0), lead_time=np.array([np.timedelta64(0, "h")]),
                           variable=self.variables.copy(), lat=self.lat.copy(), lon=self.lon.copy())

    def output_coords(self, input_coords: CoordSystem) -> CoordSystem:
        """``input_coords`` one step later; a ConfigError or DataError for coordinates the model cannot take."""
        self._check(input_coords)
        out = input_coords.copy()
        out["lead_time"] = input_coords["lead_time"] + self.dt
        return out

    def _check(self, coords: CoordSystem) -> None:
        dims = list(coords)
        if dims[-5:] != ["time", "lead_time", "variable", "lat", "lon"]:
            raise ConfigError(f"{self.name} takes dims [..., time, lead_time, variable, lat, lon], got {dims}")
        if len(coords["lead_time"]) != 1:
            raise ConfigError(f"{self.name} takes one lead_time (history 1), got {len(coords['lead_time'])}")
        have, want = [str(v) for v in coords["variable"]], list(self.variables)
        if have != want:
            extra, lacking = [v for v in have if v not in want], [v for v in want if v not in have]
            why = (f"has no variable(s) {extra}" if extra else f"needs variable(s) {lacking} the input lacks"
                   if lacking else "takes its variables in another order")
            raise ConfigError(f"{self.name} {why}; its variables: {', '.join(want)}")
        for dim, mine in (("lat", self.lat), ("lon", self.lon)):
            theirs = np.asarray(coords[dim], np.float64)
            if theirs.shape != mine.shape or not np.allclose(theirs, mine, rtol=0, atol=GRID_ATOL):
                raise DataError(f"{dim} of the input ({_span(theirs)}) is not the grid of {self.name} "
                                f"({_span(mine)}): fetch it with AERISData over {self.fc.source.path}, or map it "
                                "with earth2studio's map_coords(x, coords, model.input_coords())")

    def _rows(self, x: torch.Tensor, coords: CoordSystem) -> tuple[torch.Tensor, np.ndarray, list[int], int]:
        """The model state of x's rows (leading dims × time, time fastest), their init times and members, and
        the step x is at."""
        leading = list(coords)[:-5]
        shape = tuple(x.shape[:len(leading)])
        if "ensemble" in leading:
            members = np.asarray(coords["ensemble"])[np.indices(shape)[leading.index("ensemble")]].ravel()
        else:
            members = self.member + np.arange(int(np.prod(shape, dtype=np.int64)))
        times = np.asarray(coords["time"], "datetime64[ns]")
        inits = np.tile(times, len(members))
        members = np.repeat(members, len(times)).tolist()
        lead = np.asarray(coords["lead_time"][-1], "timedelta64[ns]")
        if lead % self.dt:
            raise ConfigError(f"lead_time {lead.astype('timedelta64[h]')} is not a multiple of the step of "
                              f"{self.name} ({self.dt})")
        state = self.fc.from_grid(x.reshape(-1, *x.shape[-3:]).to(self.device, torch.float32))
        return state, inits, members, int(lead // self.dt)

    def _advance(self, state: torch.Tensor, inits: np.ndarray, members: list[int], step: int) -> torch.Tensor:
        with torch.no_grad():  # as the rollout: a step's graph would chain every step to the next
            return advance(self.fc.step, state, inits, members, step, step * self.dt, self.seed, self.fc.perturb)

    def __call__(self, x: torch.Tensor, coords: CoordSystem) -> tuple[torch.Tensor, CoordSystem]:
        """One step from physical fields x; ``create_iterator`` keeps the model's own state between steps."""
        out_coords = self.output_coords(coords)
        state, inits, members, step = self._rows(x, coords)
        state = self._advance(state, inits, members, step + 1)
        return self.fc.to_grid(state).reshape(x.shape), out_coords

    def create_iterator(self, x: torch.Tensor, coords: CoordSystem) -> Iterator[tuple[torch.Tensor, CoordSystem]]:
        """The initial condition, then one step per item, the normalised state carried between steps as
        ``aeris-ds forecast`` carries it (not re-read from the float32 physical output)."""
        coords = coords.copy()
        self.output_coords(coords)  # refuses wrong inputs before the first yield
        yield x, coords
        state, inits, members, step = self._rows(x, coords)
        while True:
            step += 1
            state = self._advance(state, inits, members, step)
            coords = self.output_coords(coords)
            yield self.fc.to_grid(state).reshape(x.shape), coords


def to_wb2(ds: xr.Dataset) -> xr.Dataset:
    """An earth2studio forecast (its zarr or xarray backend: one array per lexicon variable, dims [ensemble,]
    time, lead_time, lat, lon) in the WeatherBench2 layout of ``aeris-ds forecast``: WB2 names with a ``level``
    dim, dims time, prediction_timedelta, number, [level], latitude, longitude, without lead 0 (the initial
    condition, which forecast stores do not hold). ``aeris-ds evaluate`` scores it:

        to_wb2(xr.open_zarr("e2s.zarr")).to_zarr("forecast.zarr")
    """
    ds = ds.rename({k: v for k, v in {"lat": "latitude", "lon": "longitude", "lead_time": "prediction_timedelta",
                                      "ensemble": "number"}.items() if k in ds.dims})
    leads = ds["prediction_timedelta"].values.astype("timedelta64[ns]")  # the store's unit (xarray keeps hours)
    ds = ds.assign_coords(prediction_timedelta=leads, time=ds["time"].values.astype("datetime64[ns]"))
    ds = ds.isel(prediction_timedelta=leads > np.timedelta64(0))
    fields: dict[str, dict[int | None, xr.DataArray]] = {}
    for name, da in ds.data_vars.items():
        var, level = wb2_of(str(name))
        fields.setdefault(var, {})[level] = da
    order = ("time", "prediction_timedelta", "number", "level", "latitude", "longitude")
    out = {}
    for var, by_level in fields.items():
        if None in by_level:
            da = by_level[None]
        else:
            levels = sorted(by_level)
            da = xr.concat([by_level[lev] for lev in levels], dim="level").assign_coords(level=levels)
        out[var] = da.transpose(*[d for d in order if d in da.dims])
    return xr.Dataset(out, attrs=ds.attrs)
