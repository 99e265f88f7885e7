"""Embedded default dataset: a Held–Suarez (1994) idealized GCM run written in the WB2 schema.

The dry primitive equations on sigma levels are integrated with the JAX spectral dycore
``dinosaur`` and forced by Held–Suarez Newtonian cooling and Rayleigh friction. The flow is
baroclinically unstable and chaotic, so forecasts, ensembles and skill scores mean something,
and at T21 with 8 sigma levels it runs ~0.2 s per simulated day on 2 CPU cores.

Only this module uses JAX/dinosaur, and only inside functions: importing it must not import JAX
(the core package is JAX-free).

Calendar: the model has no seasons and no diurnal cycle, so time stamps are labels. A "year" is
365 days of 6-hourly frames; the first saved frame is ``START`` (after the spin-up). The split
of the single output store is recorded in the attrs ``split_train``, ``split_valid`` and
``split_test`` as ``"<first time>/<last time>"`` ISO strings (inclusive).

Resumability: frames are produced in chunks of ``chunk_days`` and appended to the store a shard
(``SHARD_CHUNKS`` chunks) at a time; the model state at the start of the first shard not yet written
is kept beside the store in ``<out>.resume.npz``. A rerun (after a kill, or with more years)
recomputes from that state and skips frames already in the store. The model is deterministic, so the
result is identical to an uninterrupted run. A shard is written (and its resume point saved) by a
writer thread while the next chunks run, so generation costs about the dycore's time
(tools/bench_heldsuarez.py).

Compilation: XLA's results are kept in JAX's persistent cache, by default inside the virtual
environment (``<sys.prefix>/jax_cache``), so a second run compiles nothing.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aeris_ds.args import ArgumentParser, non_negative_float, non_negative_int, output_path, positive_int
from aeris_ds.data import schema
from aeris_ds.errors import ConfigError, DataError, OutputError
from aeris_ds.outputs import atomic_replace, kind_of, space_errors

KIND = "heldsuarez"  # the store's output kind (aeris_ds.outputs)
START = np.datetime64("2001-01-01T00:00", "ns")
FRAME_HOURS = 6
# 60 min: at T21 (~600 km) the fastest advection takes ~5 h per grid length and the semi-implicit scheme
# carries the gravity waves; against 30 min the climate agrees within 1 % (z500 std 551.8 vs 551.4 m²/s², u250
# jet 27.7 vs 27.4 m/s, 24 h z500 tendency 394 vs 391 m²/s² over 180 days) and the main job's data costs ~30 % less.
DT_MINUTES = 60
PRESSURE_LEVELS_HPA = (250, 500, 850)
SIGMA_LAYERS = 8
ATMOS_VARS = ("geopotential", "temperature", "u_component_of_wind", "v_component_of_wind")
SURFACE_VARS = ("2m_temperature", "mean_sea_level_pressure", "surface_pressure")
STATIC_VARS = ("geopotential_at_surface", "land_sea_mask")
# The default years of (train, valid, test), sized for the main job. Train: its training sees ~4000–8000
# samples, 1.4–2.7 passes over two years' 2920 (one year sufficed for a deterministic model of the same
# size on this data; a second halves the repeats and the noise of the by-day-of-year climatology). Valid:
# nothing in the job uses it, a month keeps the split for users. Test: 20 initial times with 10-day leads
# ~13 days apart (beyond the ~10-day decorrelation of z500), or 90-day rollouts. With the spin-up: 39 chunks
# of 30 days instead of 65 for 3/1/1 years.
YEARS = (2.0, 0.1, 0.75)
# dinosaur's spectral grids (T<n>: triangular truncation at n, written as the store's spectral_truncation)
RESOLUTIONS = ("T21", "T31", "T42", "T85", "T106", "T119", "T170", "T213", "T340", "T425")
VARIABLES = ATMOS_VARS + SURFACE_VARS + STATIC_VARS
# Chunks per shard: 4 × 30 days = 480 frames (inner time blocks of 240 frames, ~3 MB: data/schema.py).
SHARD_CHUNKS = 4
# Surface-pressure perturbation of the initial isothermal rest state (its position is drawn from the
# seed); it triggers the baroclinic instability.
INITIAL_PERTURBATION_PA = 5e3
_STATE_FIELDS = ("vorticity", "divergence", "temperature_variation", "log_surface_pressure")


def _jax_setup() -> None:
    """Pins JAX to the CPU before its first import (no accelerator probing, no TPU warnings)."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _jax_cache(jax: Any) -> None:
    """Persistent compilation cache in the venv unless the user chose one (JAX_COMPILATION_CACHE_DIR)."""
    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(Path(sys.prefix) / "jax_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


@dataclass(frozen=True)
class Frames:
    """6-hourly model output for consecutive frames, already in the store's orientation."""

    data: dict[str, np.ndarray]  # name -> (frame, [level,] latitude, longitude), latitude ascending

    def __len__(self) -> int:
        return next(iter(self.data.values())).shape[0]


class HeldSuarezModel:
    """A compiled Held–Suarez configuration: spin-up, chunked 6-hourly integration, diagnostics."""

    def __init__(self, resolution: str = "T21", chunk_frames: int = 120) -> None:
        _jax_setup()
        import jax
        import jax.numpy as jnp
        from dinosaur import (
            coordinate_systems,
            held_suarez,
            primitive_equations,
            primitive_equations_states,
            scales,
            sigma_coordinates,
            spherical_harmonic,
            time_integration,
            vertical_interpolation,
            xarray_utils,
        )

        _jax_cache(jax)
        units = scales.units
        grid_factory = getattr(spherical_harmonic.Grid, resolution, None)
        if grid_factory is None or not resolution.startswith("T"):
            raise ValueError(f"unknown resolution {resolution!r}; use a dinosaur Grid name like 'T21'")
        self.resolution = resolution
        self.chunk_frames = chunk_frames
        self.coords = coords = coordinate_systems.CoordinateSystem(
            horizontal=grid_factory(),
            vertical=sigma_coordinates.SigmaCoordinates.equidistant(SIGMA_LAYERS),
        )
        self.specs = specs = primitive_equations.PrimitiveEquationsSpecs.from_si()
        self._state_cls = primitive_equations.State
        self._initial_state_fn, aux = primitive_equations_states.isothermal_rest_atmosphere(
            coords, specs, p0=1e5 * units.pascal, p1=INITIAL_PERTURBATION_PA * units.pascal
        )
        ref_temps = aux[xarray_utils.REF_TEMP_KEY]
        orography = primitive_equations.truncated_modal_orography(aux[xarray_utils.OROGRAPHY], coords)
        dt = specs.nondimensionalize(DT_MINUTES * units.minute)
        equation = time_integration.compose_equations([
            primitive_equations.PrimitiveEquations(ref_temps, orography, coords, specs),
            held_suarez.HeldSuarezForcingSigma(coords=coords, physics_specs=specs,
                                               reference_temperature=ref_temps),
        ])
        # Scale-selective damping of the smallest resolved scales (dinosaur's Held–Suarez setting).
        step = time_integration.step_with_filters(
            time_integration.imex_rk_sil3(equation, dt),
            [time_integration.exponential_step_filter(coords.horizontal, dt, tau=0.0087504, order=1.5,
                                                      cutoff=0.8)],
        )
        steps_per_frame = FRAME_HOURS * 60 // DT_MINUTES

        def si(unit: Any) -> float:
            return float(specs.dimensionalize(1.0, unit).magnitude)

        to_kelvin, to_pa, to_ms = si(units.degK), si(units.pascal), si(units.meter / units.second)
        to_phi = si(units.meter**2 / units.second**2)
        grid = coords.horizontal
        log_sigma = jnp.asarray(np.log(coords.vertical.centers))
        p_levels = jnp.asarray(np.array(PRESSURE_LEVELS_HPA, float) * 100.0)[:, None, None]
        interp = vertical_interpolation.vectorize_vertical_interpolation(
            vertical_interpolation.linear_interp_with_linear_extrap)
        zero_orography = np.zeros(grid.nodal_shape)

        def diagnostics(state: Any) -> dict[str, Any]:
            # Nodal arrays are (level, longitude, latitude) in dinosaur.
            temp = ref_temps[:, None, None] + grid.to_nodal(state.temperature_variation)
            u, v = spherical_harmonic.vor_div_to_uv_nodal(grid, state.vorticity, state.divergence)
            phi = primitive_equations.get_geopotential_on_sigma(
                temp, nodal_orography=zero_orography, sigma=coords.vertical,
                gravity_acceleration=specs.g, ideal_gas_constant=specs.R)
            ps = jnp.exp(grid.to_nodal(state.log_surface_pressure)) * to_pa  # (1, lon, lat)
            # Log-pressure interpolation from sigma to the fixed pressure levels.
            target = jnp.log(p_levels / ps)

            def to_p(x: Any) -> Any:
                return interp(target, log_sigma, x)

            return {
                "geopotential": to_p(phi) * to_phi,
                "temperature": to_p(temp) * to_kelvin,
                "u_component_of_wind": to_p(u) * to_ms,
                "v_component_of_wind": to_p(v) * to_ms,
                "2m_temperature": temp[-1] * to_kelvin,  # lowest sigma level (sigma 0.94)
                "mean_sea_level_pressure": ps[0],  # flat planet: MSLP equals surface pressure
                "surface_pressure": ps[0],
            }

        self._run_chunk = jax.jit(time_integration.trajectory_from_step(
            step, outer_steps=chunk_frames, inner_steps=steps_per_frame, post_process_fn=diagnostics))
        self._jax, self._jnp = jax, jnp
        sin_lat = grid.nodal_axes[1]
        self._lat_order = np.argsort(sin_lat)
        self.latitude = np.degrees(np.arcsin(sin_lat[self._lat_order]))
        self.longitude = np.degrees(grid.nodal_axes[0])
        self._sigma_temp_unit = 1.0 / to_kelvin

    def initial_state(self, seed: int) -> Any:
        """Isothermal rest atmosphere with a seed-placed surface-pressure perturbation."""
        return self._initial_state_fn(rng_key=self._jax.random.PRNGKey(seed))

    def run_chunk(self, state: Any) -> tuple[Any, Frames]:
        """Advances ``chunk_frames`` × 6 h; returns the final state and the frames after each 6 h."""
        state, traj = self._run_chunk(state)
        data = {}
        for name, arr in traj.items():
            arr = np.asarray(arr, dtype=np.float32)
            # (frame, [level,] lon, lat) -> (frame, [level,] lat ascending, lon)
            data[name] = np.ascontiguousarray(np.swapaxes(arr, -1, -2)[..., self._lat_order, :])
        return state, Frames(data)

    def perturb_temperature(self, state: Any, kelvin: float, seed: int) -> Any:
        """Adds white noise of standard deviation ``kelvin`` to the nodal temperature (chaos tests)."""
        grid = self.coords.horizontal
        noise = np.random.default_rng(seed).standard_normal(self.coords.nodal_shape) * kelvin
        delta = grid.to_modal(self._jnp.asarray(noise * self._sigma_temp_unit, dtype=np.float32))
        return self._replace(state, temperature_variation=state.temperature_variation + delta)

    def _replace(self, state: Any, **fields: Any) -> Any:
        values = {f: getattr(state, f) for f in _STATE_FIELDS} | fields
        return self._state_cls(**values)

    def state_to_numpy(self, state: Any) -> dict[str, np.ndarray]:
        return {f: np.asarray(getattr(state, f)) for f in _STATE_FIELDS}

    def state_from_numpy(self, arrays: dict[str, np.ndarray]) -> Any:
        return self._state_cls(**{f: self._jnp.asarray(arrays[f]) for f in _STATE_FIELDS})


@functools.lru_cache(maxsize=4)
def get_model(resolution: str = "T21", chunk_frames: int = 120) -> HeldSuarezModel:
    """Cached so repeated generations in one process reuse the compiled functions."""
    return HeldSuarezModel(resolution, chunk_frames)


def _resume_path(out: Path) -> Path:
    return out.with_name(out.name + ".resume.npz")


def _save_resume(path: Path, state: dict[str, np.ndarray], frame: int, config: dict) -> None:
    """Atomically stores the model state (as numpy arrays) valid at output frame index ``frame``."""
    with atomic_replace(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, frame=np.int64(frame), config=np.str_(json.dumps(config, sort_keys=True)), **state)


def _load_resume(path: Path, config: dict) -> tuple[dict[str, np.ndarray], int]:
    with np.load(path) as z:
        saved = json.loads(str(z["config"]))
        for key, value in config.items():
            if saved.get(key) != value:
                raise ValueError(f"{path} was written with {key}={saved.get(key)!r}, this run asks for "
                                 f"{value!r}; use another --out or delete the store and {path.name}")
        return {f: z[f] for f in _STATE_FIELDS}, int(z["frame"])


class _Writer:
    """Writes chunks on one thread while the caller runs the next; at most one write is pending, and its
    error is raised at the next ``submit`` or at ``wait``."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="heldsuarez-writer")
        self._pending: Future | None = None

    def submit(self, fn: Any, *args: Any) -> None:
        self.wait()
        self._pending = self._pool.submit(fn, *args)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _frames_dataset(model: HeldSuarezModel, frames: Frames, first: int, statics: bool) -> Any:
    import xarray as xr

    n = len(frames)
    time = START + np.arange(first, first + n) * np.timedelta64(FRAME_HOURS, "h")
    data_vars = {}
    for name, arr in frames.data.items():
        dims = schema.ATMOSPHERIC_DIMS if arr.ndim == 4 else schema.SURFACE_DIMS
        data_vars[name] = (dims, arr, {"units": schema.UNITS[name]})
    if statics:
        zeros = np.zeros((model.latitude.size, model.longitude.size), np.float32)
        for name in STATIC_VARS:
            data_vars[name] = (schema.STATIC_DIMS, zeros, {"units": schema.UNITS[name]})
    coords = {
        "time": time.astype("datetime64[ns]"),
        "level": ("level", np.array(PRESSURE_LEVELS_HPA, np.int64), {"units": "hPa"}),
        "latitude": ("latitude", model.latitude, {"units": "degrees_north"}),
        "longitude": ("longitude", model.longitude, {"units": "degrees_east"}),
    }
    return xr.Dataset(data_vars, coords=coords)


def _split_attrs(n_frames: tuple[int, int, int]) -> dict[str, str]:
    """``split_*`` = "first/last" ISO times (inclusive) of each consecutive split; "" when empty."""
    attrs, start = {}, 0
    for name, n in zip(("split_train", "split_valid", "split_test"), n_frames, strict=True):
        if n:
            t0 = START + start * np.timedelta64(FRAME_HOURS, "h")
            t1 = START + (start + n - 1) * np.timedelta64(FRAME_HOURS, "h")
            attrs[name] = f"{np.datetime_as_string(t0, 's')}/{np.datetime_as_string(t1, 's')}"
        else:
            attrs[name] = ""
        start += n
    return attrs


def generate(
    out: str | Path,
    *,
    years_train: float = YEARS[0],
    years_valid: float = YEARS[1],
    years_test: float = YEARS[2],
    spinup_days: int = 120,
    seed: int = 0,
    resolution: str = "T21",
    progress: bool = True,
    chunk_days: int = 30,
) -> Path:
    """Generates (or resumes/extends) the Held–Suarez dataset store at ``out``; returns its path.

    A year is 365 days of 6-hourly frames (fractions allowed, e.g. for tests). The spin-up is
    rounded up to whole chunks of ``chunk_days`` and discarded. Deterministic in ``seed``.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    per_day = 24 // FRAME_HOURS
    n_split = tuple(int(round(y * 365 * per_day)) for y in (years_train, years_valid, years_test))
    if min(n_split) < 0 or sum(n_split) == 0:
        raise ConfigError(f"arguments --years-train/--years-valid/--years-test: need at least one "
                          f"{FRAME_HOURS}-hourly frame, got {years_train}/{years_valid}/{years_test} years")
    total = sum(n_split)
    chunk_frames = chunk_days * per_day
    spin_chunks = -(-spinup_days // chunk_days)
    config = {"resolution": resolution, "seed": seed, "spin_chunks": spin_chunks, "chunk_days": chunk_days,
              "dt_minutes": DT_MINUTES, "sigma_layers": SIGMA_LAYERS}
    attrs = {
        "title": "Held-Suarez (1994) idealized dry GCM, embedded aeris-ds default dataset",
        "model": "dinosaur spectral primitive-equation dycore, Held-Suarez forcing, flat dry planet",
        "resolution": f"{resolution}, {SIGMA_LAYERS} equidistant sigma levels, dt {DT_MINUTES} min",
        "seed": seed,
        "spinup_days": spin_chunks * chunk_days,
        "calendar_note": "no seasons or diurnal cycle; times are labels, a year is 365 days",
        "2m_temperature_note": "temperature of the lowest sigma level (sigma=0.9375)",
        "mean_sea_level_pressure_note": "equals surface_pressure (flat surface)",
        "levels_note": "sigma-to-pressure by linear interpolation in log pressure",
        # total wavenumbers n <= this carry the dycore's state; beyond it only interpolation residue (~1e-12)
        "spectral_truncation": int(resolution.lstrip("T")),
        **_split_attrs(n_split),
    }

    resume = _resume_path(out)
    n_store = 0
    if out.exists() and (kind_of(out) not in (KIND, None) or not resume.exists()):
        raise OutputError(f"{out} exists and is not a resumable Held-Suarez generation (no {resume.name} beside "
                          "it): choose another --out")
    if out.exists():
        store = schema.open_store(out)
        n_store = store.sizes["time"]
        if n_store > total:
            raise ConfigError(f"{out} already holds {n_store} frames, more than the {total} asked for: ask for "
                              "at least as many years, or choose another --out")
        if not np.isfinite(store["surface_pressure"].isel(time=-1).values).all():
            raise DataError(f"{out}: the last frame is incomplete (killed during an append); regenerate",
                            every_rank=True)
    model = get_model(resolution, chunk_frames)
    if resume.exists():
        arrays, frame = _load_resume(resume, config)
        state = model.state_from_numpy(arrays)
    else:
        state, frame = None, 0
    n_chunks_left = -(-(total - frame) // chunk_frames)
    bar = tqdm(total=(0 if state is not None else spin_chunks) + n_chunks_left, unit="chunk",
               desc=f"Held-Suarez {resolution} ({chunk_days} d chunks)", disable=not progress)

    # Frames are written a shard (SHARD_CHUNKS chunks) at a time, so that no inner chunk is rewritten by a
    # later append; the resume point follows each write.
    shard = SHARD_CHUNKS * chunk_frames
    created = n_store > 0

    def write(parts: list[dict[str, np.ndarray]], first: int, first_write: bool,
              resume_state: dict[str, np.ndarray] | None, resume_frame: int) -> None:
        # On the writer thread: merging the chunks and building the dataset cost the dycore nothing either.
        if parts:
            merged = Frames({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
            ds = _frames_dataset(model, merged, first, statics=first_write)
            if first_write:
                ds.attrs.update(attrs)
                schema.write_store(ds, out, times_per_shard=shard, kind=KIND)
            else:
                schema.write_store(ds, out, append=True)
        if resume_state is not None:  # only once the frames are in the store
            _save_resume(resume, resume_state, resume_frame, config)

    writer, parts, first = _Writer(), [], 0
    try:
        # A full disk ends the shard being written; the resume point follows only complete shards.
        with bar, space_errors(out, "generation resumes after the last complete shard"):
            if state is None:
                state = model.initial_state(seed)
                for _ in range(spin_chunks):
                    state, _ = model.run_chunk(state)
                    bar.update(1)
                _save_resume(resume, model.state_to_numpy(state), 0, config)
            while frame < total:
                state, frames = model.run_chunk(state)
                # Skip frames already in the store (resume); write at most up to ``total``.
                lo, hi = max(n_store - frame, 0), min(total - frame, chunk_frames)
                if hi > lo:
                    first = first if parts else frame + lo
                    parts.append({k: v[lo:hi] for k, v in frames.data.items()})
                whole = hi == chunk_frames  # the chunk's end state is a resume point once its frames are written
                frame += chunk_frames if whole else 0
                bar.update(1)
                if whole and frame % shard and frame < total:
                    continue
                writer.submit(write, parts, first, bool(parts) and not created,
                              model.state_to_numpy(state) if whole else None, frame)
                created, parts = created or bool(parts), []
                if not whole:
                    break
            writer.wait()
    finally:
        writer.close()
    schema.update_attrs(out, {**_split_attrs(n_split), "spectral_truncation": attrs["spectral_truncation"]})
    return out


def main(argv: list[str] | None = None) -> None:
    """``aeris-ds data heldsuarez --out PATH [...]``: generate or resume the default dataset."""
    p = ArgumentParser(prog="aeris-ds data heldsuarez", description=generate.__doc__)
    p.add_argument("--out", required=True, type=output_path, help="output zarr store")
    p.add_argument("--years-train", type=non_negative_float, default=YEARS[0])
    p.add_argument("--years-valid", type=non_negative_float, default=YEARS[1])
    p.add_argument("--years-test", type=non_negative_float, default=YEARS[2])
    p.add_argument("--spinup-days", type=non_negative_int, default=120)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--resolution", default="T21", choices=RESOLUTIONS, help="dinosaur grid (spectral truncation)")
    p.add_argument("--chunk-days", type=positive_int, default=30, help="days per appended chunk (resume unit)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    path = generate(Path(a.out), years_train=a.years_train, years_valid=a.years_valid, years_test=a.years_test,
                    spinup_days=a.spinup_days, seed=a.seed, resolution=a.resolution,
                    progress=not a.no_progress, chunk_days=a.chunk_days)
    print(path)


if __name__ == "__main__":
    from aeris_ds.errors import run_command

    raise SystemExit(run_command(main))
