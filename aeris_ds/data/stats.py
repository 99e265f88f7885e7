"""Normalization statistics, computed once over the training split and stored next to the data."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from aeris_ds.data.source import WeatherSource
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


def stats_path(store: str | Path) -> Path:
    store = Path(store)
    return store.with_name(store.name.removesuffix(".zarr") + ".stats.json")


def compute_stats(source: WeatherSource, progress: bool = True, slab: int = 64) -> Stats:
    """Per-channel mean/std of the state and std of the lead tendency, area-weighted, over the split."""
    rows, cols = np.arange(len(source.lat)), np.arange(len(source.lon))
    w = np.cos(np.deg2rad(source.lat))[:, None] * np.ones(len(cols))
    w = (w / w.sum())[None, None]
    n, lead = source.n_samples, source.lead_steps
    if not n:
        raise ValueError(f"no samples in the training split of {source.path}")
    s1 = s2 = d2 = 0.0
    for a in tqdm(range(0, n, slab), desc="stats", disable=not progress):
        t = source.time_index(a)
        block = source.read_times(slice(t, t + min(slab, n - a) + lead), rows, cols).astype(np.float64)
        x, y = block[:-lead], block[lead:]
        s1 = s1 + (w * x).sum(axis=(0, 2, 3))
        s2 = s2 + (w * x**2).sum(axis=(0, 2, 3))
        d2 = d2 + (w * (y - x) ** 2).sum(axis=(0, 2, 3))
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean**2, 0))
    tend = np.sqrt(d2 / n)
    for name, value in (("std", std), ("tendency std", tend)):
        if (value <= 0).any():
            raise ValueError(f"{name} is zero for {source.cfg.channel_names[int(np.argmin(value))]}")
    return Stats(source.cfg.channel_names, source.cfg.lead_hours, mean.tolist(), std.tolist(), tend.tolist(), int(n))


def save_stats(stats: Stats, store: str | Path) -> Path:
    """Write the stats beside the store, replacing only earlier stats (never another file of that name)."""
    path = stats_path(store)
    with writing(path, KIND) as tmp:
        tmp.write_text(json.dumps(asdict(stats), indent=1))
    return path


def load_stats(store: str | Path, channels: list[str], lead_hours: int) -> Stats:
    """Stats for exactly these channels and lead; a clear error when missing or made for something else."""
    path = stats_path(store)
    if not path.exists():
        raise FileNotFoundError(f"normalization stats {path} missing: run `aeris-ds data stats --store {store}`")
    stats = Stats(**json.loads(path.read_text()))
    if stats.channels != channels or stats.lead_hours != lead_hours:
        raise ValueError(
            f"stats {path} were made for channels {stats.channels} at lead {stats.lead_hours} h, "
            f"the config asks for {channels} at {lead_hours} h: recompute with `aeris-ds data stats`"
        )
    return stats
