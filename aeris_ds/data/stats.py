"""Normalization statistics, computed once over the training split and stored next to the data (or at
``data.stats``, e.g. away from a read-only store)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from aeris_ds.data.source import WeatherSource
from aeris_ds.errors import DataError, MissingPathError
from aeris_ds.outputs import writing

KIND = "stats"


@dataclass
class Stats:
    channels: list[str]
    lead_hours: int
    mean: list[float]
    std: list[float]
    tendency_std: list[float]  # std of x(t + lead) − x(t): the residual target is divided by it
    n_times: int
    aeris_ds_output: str = KIND  # the file's output kind (aeris_ds.outputs): it replaces only its own kind

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        f = np.float32
        return np.array(self.mean, f), np.array(self.std, f), np.array(self.tendency_std, f)


def stats_path(store: str | Path, path: str | Path | None = None) -> Path:
    """The stats file: ``path`` (the config's ``data.stats``) when given, else ``STORE.stats.json`` beside
    the store."""
    if path is not None:
        return Path(path)
    store = Path(store)
    return store.with_name(store.name.removesuffix(".zarr") + ".stats.json")


class _Moments:
    """Σ w·v (when ``first``) and Σ w·v² per channel over [T, C, lat, lon] pieces v, area weights w by latitude;
    float32 within a piece, float64 across pieces."""

    def __init__(self, w_lat: np.ndarray, first: bool = True) -> None:
        self.w_lat, self.first, self.s1, self.s2 = w_lat, first, 0.0, 0.0

    def add(self, v: np.ndarray) -> None:
        if self.first:
            self.s1 = self.s1 + np.einsum("tcyx->tcy", v).sum(axis=0, dtype=np.float64) @ self.w_lat
        self.s2 = self.s2 + np.einsum("tcyx,tcyx->tcy", v, v).sum(axis=0, dtype=np.float64) @ self.w_lat


# Times per piece: the state and the tendency of a piece are worked out while it is in the CPU cache, so the
# block is brought from memory once (the pass is memory-bound: ~1.5× faster than a pass each).
_PIECE = 8


def compute_stats(source: WeatherSource, progress: bool = True) -> Stats:
    """Per-channel mean/std of the state and std of the lead tendency, area-weighted, over the split.

    One streaming pass over whole time blocks of the store: each chunk is read once, tendencies across a
    block edge pair the block's first frames with the previous block's last ones.
    """
    rows, cols = np.arange(len(source.lat)), np.arange(len(source.lon))
    w_lat = np.cos(np.deg2rad(source.lat))
    w_lat = w_lat / (w_lat.sum() * len(cols))  # the weights of one field sum to 1
    n, lead = source.n_samples, source.lead_steps
    if not n:
        raise DataError(f"no samples in the training split of {source.path}", every_rank=True)
    start = source.time_index(0)
    stop = start + n + lead  # states are [start, start + n), targets lead steps later
    state, tendency = _Moments(w_lat), _Moments(w_lat, first=False)  # tendency: RMS about zero
    shift = tail = None  # shift: a per-channel offset against cancellation in Σx²; tail: the last `lead` frames
    blocks = source.stream(start, stop, rows, cols)
    for a, block in tqdm(blocks, desc="stats", disable=not progress,
                         total=len(source.time_blocks(start, stop, rows, cols))):
        if shift is None:  # a whole field per channel, so that numpy broadcasts it over time only
            shift = np.broadcast_to(block[0].mean(axis=(1, 2), keepdims=True), block.shape[1:]).copy()
            buf = np.empty((_PIECE, *block.shape[1:]), np.float32)
        edge = block[:lead] if tail is None else np.concatenate([tail, block[:lead]])
        tendency.add(edge[lead:] - edge[:-lead])
        n_states = max(0, start + n - a)  # the split's last `lead` frames are targets only
        for i in range(0, len(block), _PIECE):
            states = block[i:min(i + _PIECE, n_states)]
            if len(states):
                state.add(np.subtract(states, shift, out=buf[:len(states)]))
            j = max(i, lead)
            later = block[j:i + _PIECE]
            if len(later):
                tendency.add(np.subtract(later, block[j - lead:j - lead + len(later)], out=buf[:len(later)]))
        tail = block[-lead:].copy() if len(block) >= lead or tail is None else np.concatenate([tail, block])[-lead:]
    mean_shifted = state.s1 / n
    mean = shift[:, 0, 0].astype(np.float64) + mean_shifted
    std = np.sqrt(np.maximum(state.s2 / n - mean_shifted**2, 0))
    tend = np.sqrt(tendency.s2 / n)
    for name, value in (("std", std), ("tendency std", tend)):
        if (value <= 0).any():
            raise DataError(f"{name} is zero for {source.cfg.channel_names[int(np.argmin(value))]} in {source.path}")
    return Stats(source.cfg.channel_names, source.cfg.lead_hours, mean.tolist(), std.tolist(), tend.tolist(), int(n))


def save_stats(stats: Stats, store: str | Path, path: str | Path | None = None) -> Path:
    """Write the stats (at ``stats_path``), replacing only earlier stats (never another file of that name)."""
    path = stats_path(store, path)
    with writing(path, KIND) as tmp:
        tmp.write_text(json.dumps(asdict(stats), indent=1))
    return path


def load_stats(store: str | Path, channels: list[str], lead_hours: int, config: str = "small",
               path: str | Path | None = None) -> Stats:
    """Stats for exactly these channels and lead; a clear error when missing or made for something else.

    ``config``: the preset or YAML the command runs with, named in the hint that recomputes the stats;
    ``path``: its ``data.stats``."""
    path = stats_path(store, path)
    remedy = f"`aeris-ds data stats --store {store} --config {config}`"
    if not path.exists():
        raise MissingPathError(f"normalization stats {path} missing: run {remedy}")
    remedy = remedy[:-1] + " --overwrite`"  # replacing the stats that are there
    try:
        stats = Stats(**json.loads(path.read_text()))
    except (ValueError, TypeError) as err:  # truncated JSON, or fields of another version
        raise DataError(f"normalization stats {path} are unreadable ({err}): recompute with {remedy}",
                        every_rank=True) from None
    if stats.channels != channels or stats.lead_hours != lead_hours:
        raise DataError(
            f"stats {path} were made for channels {stats.channels} at lead {stats.lead_hours} h, "
            f"the config asks for {channels} at {lead_hours} h: recompute with {remedy}", every_rank=True
        )
    return stats
