"""The embedded default dataset: Held–Suarez on the sphere, generated once on first use."""

from __future__ import annotations

from pathlib import Path

import torch.distributed as dist

from aeris_ds.config import ExperimentConfig

DEFAULT_STORE = Path("data/heldsuarez.zarr")


# Years of (train, valid, test). Train: the demo's training sees ~4000–8000 samples, 1.4–2.7 passes over two
# years' 2920 (one year was enough for a deterministic model of the same size, DESIGN §5; a second halves
# the repeats and the noise of the by-day-of-year climatology). Valid: nothing in the job uses it, a month
# keeps the split for users. Test: 20 initial times with 10-day leads ~13 days apart (beyond the ~10-day
# decorrelation of z500), or a 90-day rollout. 2.85 years + spin-up: 39 chunks of 30 days instead of 65.
YEARS = (2.0, 0.1, 0.75)


def generate_store(path: Path, years: tuple[float, float, float] = YEARS) -> Path:
    """Generate (or finish generating) the Held–Suarez store; resumable."""
    from aeris_ds.data import heldsuarez

    path.parent.mkdir(parents=True, exist_ok=True)
    return heldsuarez.generate(path, years_train=years[0], years_valid=years[1], years_test=years[2])


def write_stats(path: Path, cfg: ExperimentConfig) -> Path:
    """The training split's normalisation statistics beside the store."""
    from aeris_ds.data.source import WeatherSource
    from aeris_ds.data.stats import compute_stats, save_stats

    return save_stats(compute_stats(WeatherSource(path, cfg.data, "train")), path)


def is_ready(path: Path) -> bool:
    """The store and its stats are there (stats are written only after the whole store)."""
    from aeris_ds.data.stats import stats_path

    return path.exists() and stats_path(path).exists()


def ensure_store(path: Path, cfg: ExperimentConfig, years: tuple[float, float, float] = YEARS) -> Path:
    """Generate (or finish generating) the store and its training stats; idempotent and resumable."""
    if not is_ready(path):
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
