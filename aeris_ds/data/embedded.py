"""The embedded default dataset: Held–Suarez on the sphere, generated once on first use."""

from __future__ import annotations

from pathlib import Path

import torch.distributed as dist

from aeris_ds.config import ExperimentConfig
from aeris_ds.data.heldsuarez import YEARS

DEFAULT_STORE = Path("data/heldsuarez.zarr")


def generate_store(path: Path, years: tuple[float, float, float] = YEARS) -> Path:
    """Generate (or finish generating) the Held–Suarez store; resumable."""
    from aeris_ds.data import heldsuarez

    path.parent.mkdir(parents=True, exist_ok=True)
    return heldsuarez.generate(path, years_train=years[0], years_valid=years[1], years_test=years[2])


def write_stats(path: Path, cfg: ExperimentConfig) -> Path:
    """The training split's normalisation statistics beside the store."""
    from aeris_ds.data.source import WeatherSource
    from aeris_ds.data.stats import compute_stats, save_stats

    return save_stats(compute_stats(WeatherSource(path, cfg.data, "train")), path, cfg.data.stats)


def is_ready(path: Path, stats: str | None = None) -> bool:
    """The store and its stats (``data.stats``) are there (stats are written only after the whole store)."""
    from aeris_ds.data.stats import stats_path

    return path.exists() and stats_path(path, stats).exists()


def ensure_store(path: Path, cfg: ExperimentConfig, years: tuple[float, float, float] = YEARS) -> Path:
    """Generate (or finish generating) the store and its training stats; idempotent and resumable."""
    if not is_ready(path, cfg.data.stats):
        generate_store(path, years)
        write_stats(path, cfg)
    return path


def ensure_embedded(cfg: ExperimentConfig, path: Path = DEFAULT_STORE) -> Path:
    """Rank 0 makes the data when missing while the other ranks wait (the launcher's ranks share a disk)."""
    if not dist.is_initialized() or dist.get_rank() == 0:
        ensure_store(path, cfg)
    if dist.is_initialized():
        dist.barrier()
    return path
