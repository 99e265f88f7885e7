"""The embedded default dataset: Held–Suarez on the sphere, generated once on first use."""

from __future__ import annotations

from pathlib import Path

import torch.distributed as dist

from aeris_ds.config import ExperimentConfig

DEFAULT_STORE = Path("data/heldsuarez.zarr")


def ensure_store(path: Path, cfg: ExperimentConfig, years: tuple[float, float, float] = (3, 1, 1)) -> Path:
    """Generate (or finish generating) the store and its training stats; idempotent and resumable."""
    from aeris_ds.data import heldsuarez
    from aeris_ds.data.source import WeatherSource
    from aeris_ds.data.stats import compute_stats, save_stats, stats_path

    if not (path.exists() and stats_path(path).exists()):
        path.parent.mkdir(parents=True, exist_ok=True)
        heldsuarez.generate(path, years_train=years[0], years_valid=years[1], years_test=years[2])
        save_stats(compute_stats(WeatherSource(path, cfg.data, "train")), path)
    return path


def ensure_embedded(cfg: ExperimentConfig, path: Path = DEFAULT_STORE) -> Path:
    """Rank 0 makes the data when missing while the other ranks wait (the launcher's ranks share a disk)."""
    if not dist.is_initialized() or dist.get_rank() == 0:
        ensure_store(path, cfg)
    if dist.is_initialized():
        dist.barrier()
    return path
