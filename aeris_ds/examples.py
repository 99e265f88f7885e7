"""Training examples for one rank: its tokens of each sample, noised with a per-sample seeded RNG.

The first pipeline stage needs the noisy input, the last the velocity target; both build the same
micro-batches here from (seed, epoch, sample), so they see the same noise without communicating. A rank
reads only the lat/lon block of its own windows (its 1/SP slice) and returns them in window-major order.
A rollout example (crps_finetune) holds the K states after the initial one, the forcings of each step and
the noise of each member at each step.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from aeris_ds.config import ExperimentConfig
from aeris_ds.data.forcings import Forcings
from aeris_ds.data.rechunk import warn_if_wasteful
from aeris_ds.data.source import WeatherSource
from aeris_ds.data.stats import Stats
from aeris_ds.diffusion.colored_noise import NoiseColoring, noise_gains
from aeris_ds.diffusion.trigflow import noisy_input, sample_time, velocity_target
from aeris_ds.parallel.layout import WindowGrid

SPECTRUM_SAMPLES = 128  # training tendencies that diffusion.noise_spectrum's power per degree is averaged over


def channel_weights(cfg: ExperimentConfig) -> np.ndarray:
    """Loss weight per channel: pressure-proportional per level (mean 1) × per-variable weight."""
    d = cfg.data
    levels = np.array(d.levels, dtype=np.float64)
    lev_w = levels / levels.mean() if cfg.diffusion.level_weighting == "pressure" else np.ones_like(levels)
    w = [lev_w * cfg.diffusion.variable_weights.get(v, 1.0) for v in d.atmospheric]
    w += [np.array([cfg.diffusion.variable_weights.get(v, 1.0)]) for v in d.surface]
    return np.concatenate(w).astype(np.float32) if w else np.zeros(0, np.float32)


class TrainingExamples:
    """Samples of one rank's share of the grid: state, forcings, TrigFlow noise and target, loss weights."""

    def __init__(self, source: WeatherSource, stats: Stats, cfg: ExperimentConfig, grid: WindowGrid,
                 wp: int, sp: int, seed: int):
        self.source, self.cfg, self.seed = source, cfg, seed
        self.mean, self.std, self.tend_std = (a[:, None] for a in stats.arrays())
        if (grid.lat, grid.lon) != (len(source.lat), len(source.lon)):
            raise ValueError(f"window grid {grid.lat}×{grid.lon} does not match the store's grid "
                             f"{len(source.lat)}×{len(source.lon)} ({source.path})")
        self.rows, self.cols, self.take = grid.read_block(wp, sp)
        warn_if_wasteful(source, self.rows, self.cols)
        if cfg.data.preload:
            source.preload(self.rows, self.cols)
        self.forcings = Forcings(source, cfg.data.forcings, self.rows, self.cols)
        # Loss weights of this rank's tokens, normalised by the weight sum of a whole sample and scaled by
        # WP·SP: DeepSpeed then averages over DP·WP·SP and the result is the single-process loss.
        lat = np.cos(np.deg2rad(source.lat))
        lat_w = lat / lat.mean()
        ch_w = channel_weights(cfg)
        w_full = lat_w.sum() * len(source.lon) * ch_w.sum()
        rows_w = np.repeat(lat_w[self.rows], len(self.cols))[self.take]
        self.weight = (rows_w[:, None] * ch_w[None, :] * (grid.wp * grid.sp) / w_full).astype(np.float32)
        self.noise_gains = self._noise_gains() if cfg.diffusion.noise_spectrum else None
        self.coloring = None if self.noise_gains is None else NoiseColoring(
            source.lat, len(source.lon), self.noise_gains, f"{source.path} (diffusion.noise_spectrum)")

    def _noise_gains(self) -> np.ndarray:
        """diffusion.noise_spectrum's gains per channel and degree, from the normalised tendencies of
        SPECTRUM_SAMPLES samples spread over the training split: whole fields, so every rank finds the same."""
        src = self.source
        picks = np.linspace(0, src.n_samples - 1, min(SPECTRUM_SAMPLES, src.n_samples)).round().astype(int)
        starts = np.array([src.time_index(int(s)) for s in picks])
        times = np.unique(np.concatenate([starts, starts + src.lead_steps]))
        fields = src.read_times(times, np.arange(len(src.lat)), np.arange(len(src.lon)))
        pos = np.searchsorted(times, starts)
        tendencies = (fields[np.searchsorted(times, starts + src.lead_steps)] - fields[pos]) / self.tend_std[:, :, None]
        n_lat, n_lon = len(src.lat), len(src.lon)
        truncation = int(src.ds.attrs.get("spectral_truncation", min(n_lat, n_lon // 2) - 1))
        return noise_gains(tendencies, src.lat, truncation, self.cfg.diffusion.noise_spectrum,
                           f"{src.path} (diffusion.noise_spectrum)")

    @property
    def tendency_scale(self) -> np.ndarray:
        """[C] the tendency's std over the state's: a normalised tendency × this is a normalised state change."""
        return (self.tend_std / self.std)[:, 0]

    def tokens(self, block: np.ndarray) -> np.ndarray:
        """[C, rows, cols] block → [T_home, C] in window-major order."""
        return block.reshape(block.shape[0], -1)[:, self.take].T

    def state(self, t: int) -> np.ndarray:
        """Normalised state at time index t, [C, rows, cols]."""
        return (self.source.read(t, self.rows, self.cols) - self.mean[:, :, None]) / self.std[:, :, None]

    def example(self, sample: int, epoch: int) -> tuple[np.ndarray, float, np.ndarray]:
        """(network input [T, C_in], diffusion time t, velocity target [T, C])."""
        src = self.source
        t0 = src.time_index(sample)
        x, y = src.read_many([t0, t0 + src.lead_steps], self.rows, self.cols)
        state = (x - self.mean[:, :, None]) / self.std[:, :, None]
        x0 = (y - x) / self.tend_std[:, :, None]
        rng = np.random.default_rng([self.seed, epoch, sample])
        d = self.cfg.diffusion
        t = sample_time(rng, d.sigma_min, d.sigma_max, d.sigma_d, d.noise_distribution, d.p_mean, d.p_std)
        z = self.noise(epoch, sample, x0.shape[0])
        sd = d.sigma_d
        x_t = noisy_input(x0, z, t, sd)
        forcing = self.forcings(src.times[t0 + src.lead_steps])
        net_in = np.concatenate([x_t, state, forcing], axis=0)
        return self.tokens(net_in), t, self.tokens(velocity_target(x0, z, t, sd))

    def rollout(self, sample: int, epoch: int, members: int) -> tuple[np.ndarray, ...]:
        """(initial state [T, C], forcings [K, T, F], noise [K, M, T, C], truths [K, T, C]) of a K-step rollout."""
        src = self.source
        t0 = src.time_index(sample)
        times = [t0 + k * src.lead_steps for k in range(src.steps + 1)]
        states = (src.read_many(times, self.rows, self.cols) - self.mean[:, :, None]) / self.std[:, :, None]
        tokens = [self.tokens(s) for s in states]
        forcings = [self.tokens(self.forcings(src.times[t])) for t in times[1:]]
        c = states.shape[1]
        noise = [[self.tokens(self.noise(epoch, sample, c, m, k)) for m in range(members)]
                 for k in range(1, src.steps + 1)]
        return tokens[0], np.stack(forcings), np.array(noise), np.stack(tokens[1:])

    def noise(self, epoch: int, sample: int, channels: int, *key: int) -> np.ndarray:
        """Gaussian noise of this rank's block, drawn row by row from (seed, epoch, sample, row, key…), so any
        split of the grid over ranks sees exactly the noise of the whole field; coloured on the whole field
        (diffusion.noise_spectrum) before the block is cut out."""
        rows = self.rows if self.coloring is None else np.arange(len(self.source.lat))
        z = np.stack([np.random.default_rng([self.seed, epoch, sample, 1 + int(r), *key])
                      .standard_normal((channels, len(self.source.lon)), dtype=np.float32) for r in rows], axis=1)
        if self.coloring is not None:
            z = self.coloring(torch.from_numpy(z)).numpy()[:, self.rows]
        return z[:, :, self.cols]


class MicroBatches(torch.utils.data.Dataset):
    """Item k = the k-th micro-batch of this DP rank: ((input, t), (target, weight)), or for a rollout
    objective ((state, forcings, noise), (truths, weight)).

    Step s uses positions [s·G, (s+1)·G) of an endless stream of epochs (G = global batch in distinct
    samples); DP rank d takes its contiguous share, cut into accumulation micro-batches.
    """

    def __init__(self, examples: TrainingExamples, micro: int, accumulation: int, dp: int, dp_rank: int,
                 dtype: torch.dtype = torch.float32):
        self.ex, self.micro, self.acc, self.dp, self.dp_rank, self.dtype = (
            examples, micro, accumulation, dp, dp_rank, dtype)
        if examples.source.n_samples < 1:
            raise ValueError(f"no training samples in {examples.source.path}")

    def __len__(self) -> int:
        return 2**62

    @lru_cache(maxsize=2)  # noqa: B019 - one permutation per epoch, two live at an epoch boundary
    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.ex.seed, epoch, 7]).permutation(self.ex.source.n_samples)

    def samples(self, k: int) -> list[tuple[int, int]]:
        step, m = divmod(k, self.acc)
        global_batch = self.micro * self.acc * self.dp
        base = step * global_batch + self.dp_rank * self.micro * self.acc + m * self.micro
        n = self.ex.source.n_samples
        return [(int(self._order(p // n)[p % n]), p // n) for p in range(base, base + self.micro)]

    def step_samples(self, step: int) -> list[int]:
        """The samples of optimizer step ``step`` (0-based) over every DP rank: to name them in errors."""
        global_batch = self.micro * self.acc * self.dp
        n = self.ex.source.n_samples
        return [int(self._order(p // n)[p % n]) for p in range(step * global_batch, (step + 1) * global_batch)]

    def __getitem__(self, k: int):
        d = self.ex.cfg.diffusion
        if d.objective == "crps_finetune":
            parts = zip(*(self.ex.rollout(s, e, d.crps_members) for s, e in self.samples(k)))
            *inputs, truths = (torch.from_numpy(np.stack(a)) for a in parts)
            inputs, labels = tuple(a.to(self.dtype) for a in inputs), (truths,)
        else:
            xs, ts, vs = zip(*(self.ex.example(s, e) for s, e in self.samples(k)))
            t = torch.tensor(ts, dtype=torch.float32).to(self.dtype)
            inputs, labels = (torch.from_numpy(np.stack(xs)).to(self.dtype), t), (torch.from_numpy(np.stack(vs)),)
        w = torch.from_numpy(self.ex.weight / self.micro).expand(self.micro, -1, -1).contiguous()
        return inputs, (*labels, w)


def micro_batch_loader(batches: MicroBatches, start: int, workers: int) -> torch.utils.data.DataLoader:
    """Micro-batches from index ``start`` on, prefetched by worker processes."""
    return torch.utils.data.DataLoader(
        batches, batch_size=None, sampler=range(start, len(batches)), num_workers=workers,
        prefetch_factor=4 if workers else None, persistent_workers=False,
    )
