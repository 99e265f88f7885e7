"""`aeris-ds forecast`: ensemble rollouts of a trained model from held-out initial conditions.

Each step solves TrigFlow's probability-flow ODE with DPM-Solver++(2S) for the normalized tendency,
conditioned on the current state and the forcings at the step's valid time, and adds it to the state.
Members are spread over the ranks (ensemble parallel over DP: run under torchrun or the deepspeed
launcher); every rank holds the whole model. Steps stream into one WeatherBench2-layout zarr store.
"""

from __future__ import annotations

import argparse
import math
import os
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from pydantic import ValidationError

from aeris_ds.args import (
    ArgumentParser,
    existing_path,
    init_times,
    lead,
    lead_steps,
    non_negative_int,
    output_path,
    parse_duration,
    parse_init_times,
    parse_sampler,
    positive_int,
    sampler,
)
from aeris_ds.config import ExperimentConfig, SamplerConfig
from aeris_ds.data.forcings import Forcings
from aeris_ds.data.source import WeatherSource
from aeris_ds.data.stats import load_stats, stats_path
from aeris_ds.diffusion.colored_noise import NoiseColoring
from aeris_ds.diffusion.consistency import ConsistencySampler, consistency_sample
from aeris_ds.diffusion.sampler import sample
from aeris_ds.errors import CheckpointError, ConfigError, DataError, OutputError, log_to, run_command
from aeris_ds.forecast.rollout import Perturb, member_generator, rollout
from aeris_ds.forecast.store import KIND, ForecastStore
from aeris_ds.model.compiled import compile_blocks
from aeris_ds.model.swin_dit import single_process_model
from aeris_ds.outputs import check_output, ensure_space, space_errors, writing
from aeris_ds.perf.flops import native_bf16
from aeris_ds.spectral import SpectralTruncation
from aeris_ds.weights import load_into, load_weights, objective_of

# Generator streams of the perturbations: (member pair, this + step), apart from the members' own (member, step).
PERTURBATION_STREAM = 2**32


class Forecaster:
    """A trained network + its data normalisation, as a rollout step function on whole-grid states."""

    def __init__(self, weights: str | Path, store: str | Path,
                 sampler: SamplerConfig | ConsistencySampler | None = None, use_ema: bool = True,
                 compile: bool | None = None, lead: np.timedelta64 | None = None, bf16: bool | None = None):
        """``compile``: each Swin block through torch.compile; None: as the weights were trained (train.compile).
        ``bf16``: the network under bf16 autocast (the state, sampler and projection stay fp32); None: where the
        weights were trained in bf16 (train.bf16 true or auto) and this device computes bf16 natively.
        ``lead``: checked to be a whole number of model steps before the store or the model is touched."""
        saved = load_weights(weights)
        objective, consistent = objective_of(saved), isinstance(sampler, ConsistencySampler)
        if consistent != (objective != "diffusion"):  # consistency and its crps_finetune are one-step models
            hint = "drop --consistency-steps" if objective == "diffusion" else "use --consistency-steps 1|2"
            raise ConfigError(f"{weights} holds a {objective} model: {hint}")
        self.cfg = cfg = ExperimentConfig(**saved["meta"]["config"])
        if lead is not None:
            lead_steps(lead, cfg.data.lead_hours, str(weights))
        self.sampler = cfg.sampler if sampler is None else sampler
        self.source = WeatherSource(store, cfg.data, grid=(cfg.grid.lat, cfg.grid.lon))
        stats = load_stats(store, cfg.data.channel_names, cfg.data.lead_hours, cfg.name, cfg.data.stats)
        self.mean, self.std, tend_std = (torch.from_numpy(a) for a in stats.arrays())
        self.tendency_scale = tend_std / self.std  # normalised tendency → normalised state units
        model, routing = single_process_model(cfg, self.source.lat, self.source.lon)
        self.model = model.eval()
        self.ids = routing.home_ids  # token order of a state: grid ids, window-major
        self.grid_order = np.argsort(self.ids)  # grid id → its token
        self.real = self.source.grid.real  # model rows that are store rows; forecasts hold only these
        self.fill = self._padding_fill()
        load_into(self.model, saved["ema" if use_ema else "params"], weights)
        self.bf16 = (cfg.train.bf16 in ("auto", True) and native_bf16()) if bf16 is None else bf16
        if cfg.train.compile if compile is None else compile:
            compile_blocks(self.model, say=not dist.is_initialized() or dist.get_rank() == 0)
        every = np.arange(cfg.grid.lat), np.arange(cfg.grid.lon)
        self.forcings = Forcings(self.source, cfg.data.forcings, *every)
        self.lead = np.timedelta64(cfg.data.lead_hours, "h")
        project = (self.sampler if isinstance(self.sampler, SamplerConfig) else cfg.sampler).project
        self.truncation = self._truncation(store) if project else None
        # the channels SpectralTruncation.fields projects as u·cos φ
        self.wind = torch.tensor([any(w in n for w in ("u_component_of_wind", "v_component_of_wind"))
                                  for n in cfg.data.channel_names])
        self.coloring = self._coloring(saved["meta"].get("noise_gains"), weights, store)

    def _coloring(self, gains: list | None, weights: str | Path, store: str | Path) -> NoiseColoring | None:
        """The training noise's colour (diffusion.noise_spectrum), saved with the weights; None for white noise."""
        if not self.cfg.diffusion.noise_spectrum:
            return None
        if gains is None:
            raise CheckpointError(f"{weights} was trained with diffusion.noise_spectrum but holds no noise_gains")
        self._require_whole_grid("diffusion.noise_spectrum", store)
        return NoiseColoring(self.source.lat, self.cfg.grid.lon, gains, f"{store} (diffusion.noise_spectrum)")

    def _truncation(self, store: str | Path) -> SpectralTruncation:
        n = self.source.ds.attrs.get("spectral_truncation")
        if n is None:
            raise DataError(f"{store} declares no spectral_truncation attr (written before stores recorded it?): "
                            "regenerate it, or forecast with --sampler project=false")
        self._require_whole_grid("sampler.project", store)
        return SpectralTruncation(self.source.lat, self.cfg.grid.lon, int(n), str(store))

    def _require_whole_grid(self, option: str, store: str | Path) -> None:
        """Spectral maps work on the store's own grid: refused when the model's grid pads it."""
        if self.fill is not None:
            raise ConfigError(f"{option} needs the store's whole grid, but grid.lat={self.cfg.grid.lat} pads {store}")

    def _padding_fill(self) -> torch.Tensor | None:
        """Token → token it copies (padding rows repeat the edge row, as the reader pads); None without padding."""
        n_lat, n_lon = self.cfg.grid.lat, self.cfg.grid.lon
        if (self.real.start, self.real.stop) == (0, n_lat):
            return None
        row_of = np.clip(np.arange(n_lat), self.real.start, self.real.stop - 1)
        copied = (row_of[:, None] * n_lon + np.arange(n_lon)).ravel()  # grid id → grid id it copies
        position = np.empty(self.ids.size, np.int64)
        position[self.ids] = np.arange(self.ids.size)
        return torch.from_numpy(position[copied[self.ids]])

    def to(self, device: torch.device | str) -> Forecaster:
        """The network and the normalisation on ``device``; states, noise and forcings follow the state's device."""
        self.model.to(device)
        self.mean, self.std, self.tendency_scale, self.wind = (
            t.to(device) for t in (self.mean, self.std, self.tendency_scale, self.wind))
        self.fill = None if self.fill is None else self.fill.to(device)
        return self

    def to_tokens(self, field: np.ndarray) -> torch.Tensor:
        """[C, lat, lon] → [T, C] in the model's token order."""
        return torch.from_numpy(field.reshape(field.shape[0], -1)[:, self.ids].T.copy())

    def initial_state(self, time_index: int) -> torch.Tensor:
        """The normalised state at ``time_index`` as tokens."""
        field = self.source.read(time_index, np.arange(self.cfg.grid.lat), np.arange(self.cfg.grid.lon))
        return (self.to_tokens(field).to(self.mean.device) - self.mean) / self.std

    @property
    def perturb(self) -> Perturb | None:
        """``perturbation`` when the sampler asks for random-field perturbations (of the initial state or of each
        later step's input), else None: what rollouts and ``advance`` take."""
        s = self.sampler
        wanted = isinstance(s, SamplerConfig) and (s.init_perturbation > 0 or s.step_perturbation > 0)
        return self.perturbation if wanted else None

    def perturbation(self, init_time: np.datetime64, member: int, seed: int, step: int) -> torch.Tensor:
        """Member ``member``'s random-field perturbation at ``step`` (0: of the initial state), normalised tokens.

        ± scale·(x_a − x_b)/√2 (Magnusson et al. 2009): the difference of two training-split states of the
        model's own climate is balanced and has its spectrum, and /√2 gives it the climate's variance at scale 1.
        Members 2p and 2p + 1 draw the same (a, b) with opposite signs, so each pair's mean is unperturbed.
        """
        s = self.sampler
        scale = s.init_perturbation if step == 0 else s.step_perturbation
        if scale == 0.0:
            return torch.zeros(self.ids.size, self.cfg.data.n_channels, device=self.mean.device)
        g = member_generator(seed, init_time, member // 2, PERTURBATION_STREAM + step)
        lo, n = self._climate.start, self._climate.stop - self._climate.start
        a = int(torch.randint(n, (), generator=g))
        b = int(torch.randint(n - 1, (), generator=g))
        b += b >= a  # two different states: a zero perturbation would leave a pair unperturbed
        a, b = lo + a, lo + b
        sign = 1.0 if member % 2 == 0 else -1.0
        return sign * scale / math.sqrt(2.0) * (self.initial_state(a) - self.initial_state(b))

    @cached_property
    def _climate(self) -> slice:
        """The training split's time indices: the states perturbations are drawn from."""
        part = self.source.split_range(self.cfg.data.train_split)
        if part.stop - part.start < 2:
            raise DataError(f"random-field perturbations need two training-split states in {self.source.path}, "
                            f"found {part.stop - part.start}", every_rank=True)
        return part

    def step(self, state: torch.Tensor, generators, valid_times: np.ndarray) -> torch.Tensor:
        """The rollout step for a batch of rows: state_k = state_{k−1} + sampled tendency, each row forced at
        its own valid time (rows may belong to different init times)."""
        times, which = np.unique(valid_times, return_inverse=True)
        forcing = torch.stack([self.to_tokens(self.forcings(t)) for t in times])[torch.from_numpy(which)]
        forcing = forcing.to(state.device)
        noise = self._colored(torch.stack([torch.randn(state.shape[1:], generator=g, device=state.device)
                                           for g in generators]))

        def velocity(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            with torch.autocast(state.device.type, torch.bfloat16, enabled=self.bf16):
                return self.model(torch.cat([x_t, state, forcing], dim=-1), t).float()

        if isinstance(self.sampler, ConsistencySampler):
            tendency = consistency_sample(velocity, noise, self.sampler, generator=list(generators))
        else:
            tendency = sample(velocity, noise, self.sampler, generator=list(generators), color=self._colored)
        new = state + tendency * self.tendency_scale
        if self.truncation is not None:
            new = self._project(new)
        return new if self.fill is None else new[:, self.fill]

    def _grid(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, T, C] tokens → [B, C, lat, lon] on the model's grid."""
        grid = tokens.transpose(1, 2)[:, :, self.grid_order]
        return grid.reshape(*grid.shape[:2], self.cfg.grid.lat, self.cfg.grid.lon)

    def _tokens(self, grid: torch.Tensor) -> torch.Tensor:
        """_grid's inverse."""
        return grid.reshape(*grid.shape[:2], -1)[:, :, self.ids].transpose(1, 2)

    def _colored(self, noise: torch.Tensor) -> torch.Tensor:
        """White noise tokens [B, T, C] in the training noise's colour."""
        return noise if self.coloring is None else self._tokens(self.coloring(self._grid(noise))).contiguous()

    def _project(self, states: torch.Tensor) -> torch.Tensor:
        """States [B, T, C] onto the store's spectral truncation (in physical units: the projection of a wind
        is not linear in its normalised value)."""
        grid = self.truncation.fields(self._grid(states.double() * self.std + self.mean), self.wind)
        return ((self._tokens(grid) - self.mean) / self.std).to(states.dtype)

    def to_grid(self, states: torch.Tensor) -> torch.Tensor:
        """[B, T, C] normalised tokens → [B, C, lat, lon] in physical units, the store's rows only (no padding)."""
        return self._grid(states * self.std + self.mean)[:, :, self.real]

    def from_grid(self, grid: torch.Tensor) -> torch.Tensor:
        """to_grid's inverse: [B, C, lat, lon] on the store's rows → [B, T, C] normalised tokens, padding rows
        repeating the edge rows as the reader pads (the same state as initial_state for the same fields)."""
        rows = np.clip(np.arange(self.cfg.grid.lat), self.real.start, self.real.stop - 1) - self.real.start
        tokens = grid[:, :, rows].reshape(*grid.shape[:2], -1)[:, :, self.ids].transpose(1, 2).contiguous()
        return (tokens - self.mean) / self.std

    def to_physical(self, states: torch.Tensor) -> dict[str, np.ndarray]:
        """[B, T, C] normalised tokens → WB2 variables [B, (level,) lat, lon] in physical units."""
        grid = self.to_grid(states).cpu().numpy()
        out, c, n_lev = {}, 0, len(self.cfg.data.levels)
        for name in self.cfg.data.atmospheric:
            out[name], c = grid[:, c:c + n_lev], c + n_lev
        for name in self.cfg.data.surface:
            out[name], c = grid[:, c], c + 1
        return out

    def variables(self) -> dict[str, list[int] | None]:
        d = self.cfg.data
        return {**{v: list(d.levels) for v in d.atmospheric}, **{v: None for v in d.surface}}


def sampler_overrides(weights: str | Path, text: str) -> SamplerConfig | None:
    """The sampler saved with the weights, with ``key=value,…`` overrides; None when there are none."""
    items = parse_sampler(text)
    if not items:
        return None
    saved = load_weights(weights)["meta"]["config"].get("sampler", {})
    try:
        return SamplerConfig(**{**saved, **items})
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'sampler'}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"argument --sampler: {text!r} with the settings saved in {weights}: {problems}") from None


def pick_init_times(source: WeatherSource, spec: str, n_steps: int) -> list[int]:
    """``test:N`` → N init times spread evenly over a split, each with its whole lead inside the split (so it
    can be verified); or comma-separated ISO times."""
    parsed = parse_init_times(spec)
    if isinstance(parsed, tuple):
        split, count = parsed
        part = source.split_range(split)
        last = part.stop - 1 - n_steps * source.lead_steps
        if last < part.start:
            raise DataError(f"split {split} of {source.path} is shorter than the lead of {n_steps} steps",
                            every_rank=True)
        idx = np.linspace(part.start, last, count + 2)[1:-1].round().astype(int)
        return sorted(set(idx.tolist()))
    missing = [str(t) for t in parsed if t not in source.times]
    if missing:
        raise DataError(f"init times {missing} are not in {source.path}", every_rank=True)
    return [int(np.flatnonzero(source.times == t)[0]) for t in parsed]


def run_forecast(weights: str | Path, store: str | Path, out: str | Path, init_times: str, members: int,
                 lead: str, sampler: SamplerConfig | ConsistencySampler | None = None,
                 seed: int = 0, use_ema: bool = True,
                 progress: bool = True, overwrite: bool = False, batch: int = 64, compile: bool | None = None,
                 bf16: bool | None = None) -> Path:
    """Create (or resume) the forecast store and roll out this rank's share of the (init, member) rows.

    ``out`` must be new or a forecast store (resumed; replaced with ``overwrite``), never an input.
    ``sampler`` None: the sampler settings saved with the weights (their config's ``sampler`` section).
    """
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    lead_td = parse_duration(lead)  # a wrong --lead is reported before anything is read
    out = Path(out)
    # Every rank checks before anything is loaded or written, so a refusal is raised on all of them at once.
    resume = check_output(out, KIND, inputs=[weights, store, stats_path(store)], overwrite=overwrite,
                          resumable=True)
    fc = Forecaster(weights, store, sampler, use_ema, compile, lead=lead_td, bf16=bf16)
    n_steps = int(lead_td // fc.lead)
    inits = pick_init_times(fc.source, init_times, n_steps)
    if dist.is_initialized():
        dist.barrier()
    rerun = "the forecast resumes from each member's last complete step"
    if rank == 0 and not resume:
        with writing(out, KIND) as tmp:
            fc_store = ForecastStore.create(
                tmp, fc.source.times[inits], fc.lead * np.arange(1, n_steps + 1), members, fc.variables(),
                fc.source.lat[fc.real], fc.source.lon,
                attrs={"model": fc.cfg.name, "weights": str(weights), "sampler": repr(fc.sampler), "seed": seed,
                       "ema": use_ema, "truth": str(store), "bf16": fc.bf16})
            fc_store.ensure_state((fc.ids.size, fc.cfg.data.n_channels), np.dtype("float32"))
            # Only metadata so far: refused here, nothing is left behind.
            ensure_space(out, fc_store.space_needed(n_steps), "forecast")
    elif rank == 0:
        ensure_space(out, ForecastStore.open(out).space_needed(n_steps), "forecast", rerun)
    if dist.is_initialized():
        dist.barrier()
    fc_store = ForecastStore.open(out)
    if len(fc_store.init_times) != len(inits) or len(fc_store.leads) < n_steps or fc_store.members != members:
        raise OutputError(f"{out} was created for another forecast (inits, leads or members differ): choose "
                          "another --out, or pass --overwrite to replace it")
    # (init, member) rows round-robin over the ranks, rolled out in equal chunks of at most ``batch`` rows (one
    # shape for compiled blocks)
    rows = [(i, m) for i in range(len(inits)) for m in range(members)][rank::world]
    size = max(1, math.ceil(len(rows) / math.ceil(len(rows) / batch))) if rows else 1
    for a in range(0, len(rows), size):
        chunk = rows[a:a + size]
        state = torch.stack([fc.initial_state(inits[i]) for i, _ in chunk])
        with space_errors(out, rerun):
            rollout(fc.step, state, n_steps, fc_store, chunk, fc.to_physical, seed, progress=progress and rank == 0,
                    perturb=fc.perturb)
    if dist.is_initialized():
        dist.barrier()
    return out


def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(prog="aeris-ds forecast", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, type=existing_path, help="weights.pt written at the end of training")
    p.add_argument("--store", default="data/heldsuarez.zarr", type=existing_path,
                   help="store with the initial conditions (and truth)")
    p.add_argument("--init-times", default="test:4", type=init_times,
                   help="test:N (evenly over the test split) or ISO times")
    p.add_argument("--members", type=positive_int, default=8)
    p.add_argument("--lead", default="10d", type=lead, help="e.g. 10d or 72h: a multiple of the model step")
    p.add_argument("--out", default="runs/forecast.zarr", type=output_path,
                   help="new zarr store, or a forecast store to resume (never a run folder or the data store)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing forecast store at --out")
    p.add_argument("--batch", type=positive_int, default=64, help="(init, member) rows per network call on a rank")
    one_step = p.add_mutually_exclusive_group()
    one_step.add_argument("--sampler", default="", metavar="KEY=VALUE,…", type=sampler,
                          help="override the sampler settings saved with the weights, e.g. steps=5,sigma_min=0.02,"
                               f"churn=1 (keys: {', '.join(SamplerConfig.model_fields)})")
    one_step.add_argument("--consistency-steps", type=int, choices=[1, 2], default=None,
                          help="sample a one-step model (objective consistency or crps_finetune) in 1 or 2 steps")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="each Swin block through torch.compile (default: as the weights were trained, train.compile)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="the network under bf16 autocast (default: where the weights were trained in bf16 and the "
                        "device computes bf16 natively)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of their EMA")
    args = p.parse_args(argv)
    log_to(Path(args.out).parent / "error.log")  # the run folder's, as training's
    if "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    try:
        out = run_forecast(args.weights, args.store, args.out, args.init_times, args.members, args.lead,
                           ConsistencySampler(args.consistency_steps) if args.consistency_steps
                           else sampler_overrides(args.weights, args.sampler), args.seed, not args.no_ema,
                           overwrite=args.overwrite, batch=args.batch, compile=args.compile, bf16=args.bf16)
        if not dist.is_initialized() or dist.get_rank() == 0:
            print(f"forecast written to {out}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(run_command(main))
