"""Streaming passes over a store: normalisation statistics against one sequential read of the bytes they need,
and a rank's training preload (whole time blocks) against the former 64-time slabs, measured in the same run.

The read baseline is the reader's own pass over the same time blocks (``WeatherSource.read_times``, one
after the other, nothing computed). Target: statistics ≤ 1.2× that read.

    python tools/bench_stats.py --store data/heldsuarez.zarr [--config small] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from aeris_ds.config import load_config
from aeris_ds.data.source import WeatherSource
from aeris_ds.data.stats import compute_stats
from aeris_ds.parallel.layout import WindowGrid


def sequential_read(source: WeatherSource, start: int, stop: int, rows: np.ndarray, cols: np.ndarray) -> float:
    t = time.perf_counter()
    for a, b in source.time_blocks(start, stop, rows, cols):
        source.read_times(slice(a, b), rows, cols)
    return time.perf_counter() - t


def slab_preload(source: WeatherSource, rows: np.ndarray, cols: np.ndarray) -> float:
    """The former preload: 64-time slabs, concatenated at the end."""
    t = time.perf_counter()
    start, stop = source.split_slice.start, min(len(source.times), source.split_slice.stop)
    np.concatenate([source.read_times(slice(a, min(a + 64, stop)), rows, cols) for a in range(start, stop, 64)])
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", type=Path, required=True)
    p.add_argument("--config", default="small")
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    cfg = load_config(a.config)
    source = WeatherSource(a.store, cfg.data, "train")
    rows, cols = np.arange(len(source.lat)), np.arange(len(source.lon))
    start = source.time_index(0)
    stop = start + source.n_samples + source.lead_steps
    mb = (stop - start) * cfg.data.n_channels * len(rows) * len(cols) * 4 / 1e6
    chunks = source.arrays[cfg.data.atmospheric[0]].chunks
    print(f"{a.store}: training split {stop - start} times, {cfg.data.n_channels} channels, {mb:.0f} MB; "
          f"inner chunk {chunks}")
    grid = WindowGrid(cfg.grid.lat, cfg.grid.lon, tuple(cfg.model.window), cfg.layout.wp, cfg.layout.sp)
    r_rows, r_cols, _ = grid.read_block(0, 0)
    print(f"{'repeat':>6}{'read s':>8}{'stats s':>9}{'ratio':>7}{'preload s':>11}{'slabs s':>9}"
          f"   (preload: rank 0 of WP={cfg.layout.wp}, {len(r_rows)}×{len(r_cols)} points)")
    rounds = []
    for r in range(a.repeats + 1):  # the first round warms the page cache
        t_read = sequential_read(source, start, stop, rows, cols)
        t = time.perf_counter()
        compute_stats(source, progress=False)
        t_stats = time.perf_counter() - t
        t = time.perf_counter()
        WeatherSource(a.store, cfg.data, "train").preload(r_rows, r_cols, progress=False)
        t_pre = time.perf_counter() - t
        t_slab = slab_preload(WeatherSource(a.store, cfg.data, "train"), r_rows, r_cols)
        if r:
            rounds.append((t_read, t_stats, t_pre, t_slab))
        print(f"{r if r else 'warm':>6}{t_read:>8.2f}{t_stats:>9.2f}{t_stats / t_read:>7.2f}{t_pre:>11.2f}"
              f"{t_slab:>9.2f}")
    med = np.median(rounds, axis=0)  # the machine's load varies: medians over the rounds
    print(f"{'median':>6}{med[0]:>8.2f}{med[1]:>9.2f}{med[1] / med[0]:>7.2f}{med[2]:>11.2f}{med[3]:>9.2f}"
          f"   read {mb / med[0]:.0f} MB/s")


if __name__ == "__main__":
    main()
