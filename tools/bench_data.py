"""Data pipeline benchmark: loader samples/s per rank against a raw zarr read of the same bytes, and the bytes
each rank reads for 1×, 2× and 4× spatial splits.

Runs on a synthetic 32×64 store (written to a temporary folder) and on the Held–Suarez store at
data/heldsuarez.zarr when it exists. Timings are ratios to the raw read measured in the same run.

    python tools/bench_data.py [--samples 40] [--times 320] [--store PATH ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr
from zarr.storage import LocalStore

from aeris_ds.config import load_config
from aeris_ds.data.source import CountingStore, WeatherSource
from aeris_ds.data.stats import compute_stats
from aeris_ds.data.synthetic import synthetic_store
from aeris_ds.examples import MicroBatches, TrainingExamples, micro_batch_loader
from aeris_ds.parallel.layout import WindowGrid

WINDOW = (8, 8)
SPLITS = [(1, 1), (2, 1), (4, 1), (2, 2)]  # (WP, SP): 1×, 2×, 4×, 4× spatial split


def _config(source_path: Path, preload: bool):
    """The default data channels and forcings; the grid is the store's."""
    store = zarr.open_group(str(source_path), mode="r")
    n_lat, n_lon = store["latitude"].shape[0], store["longitude"].shape[0]
    return load_config("small", {"grid": {"lat": n_lat, "lon": n_lon},
                                 "data": {"preload": preload, "workers": 0, "store": str(source_path)}})


def raw_read(path: Path, examples: TrainingExamples, order: list[int]) -> float:
    """Seconds to read with zarr (no xarray) exactly the bytes of the rank's samples: state and target of each
    variable in one orthogonal read, as the reader does."""
    cfg, src = examples.cfg.data, examples.source
    group = zarr.open_group(str(path), mode="r")
    arrays = [(group[v], True) for v in cfg.atmospheric] + [(group[v], False) for v in cfg.surface]
    start = time.perf_counter()
    block = (examples.rows, examples.cols)
    for s in order:
        t0 = src.time_index(s)
        ts = np.array([t0, t0 + src.lead_steps])
        for arr, atm in arrays:
            arr.oindex[(ts, src.level_index, *block) if atm else (ts, *block)]
    return time.perf_counter() - start


def loader_read(batches: MicroBatches, n: int, workers: int) -> float:
    """Seconds for n micro-batches (of one sample) through the DataLoader, after the first (worker start-up)."""
    it = iter(micro_batch_loader(batches, 0, workers))
    next(it)
    start = time.perf_counter()
    for _ in range(n):
        next(it)
    return time.perf_counter() - start


def bench_store(path: Path, n: int, repeat: int) -> None:
    print(f"\n## {path}")
    stats = compute_stats(WeatherSource(path, _config(path, False).data, "train"), progress=False)
    rows = []
    for preload in (False, True):
        cfg = _config(path, preload)
        grid = WindowGrid(cfg.grid.lat, cfg.grid.lon, WINDOW)
        start = time.perf_counter()
        examples = TrainingExamples(WeatherSource(path, cfg.data, cfg.data.train_split), stats, cfg, grid, 0, 0, 0)
        setup = time.perf_counter() - start
        batches = MicroBatches(examples, micro=1, accumulation=1, dp=1, dp_rank=0)
        order = [batches.samples(k)[0][0] for k in range(1, n + 1)]  # the samples the loader times
        raw, loader = [], {w: [] for w in (0, 1, 2)}
        for _ in range(repeat):  # interleaved, best of each: the machine is shared and its load drifts
            raw.append(raw_read(path, examples, order))
            for w in loader:
                loader[w].append(loader_read(batches, n, w))
        rows += [(preload, w, n / min(loader[w]), n / min(raw), setup) for w in loader]
    print(f"{'preload':>8} {'workers':>8} {'loader/s':>9} {'raw zarr/s':>11} {'ratio':>6}  (preload setup s)")
    for preload, workers, rate, raw, setup in rows:
        print(f"{preload!s:>8} {workers:>8} {rate:9.1f} {raw:11.1f} {rate / raw:6.2f}  ({setup:.1f})")

    print(f"\n{'WP×SP':>6} {'split':>5} {'chunks/rank':>11} {'chunk KB/rank':>13} {'of full':>7} "
          f"{'index KB/rank':>13} {'all ranks / full':>16}")
    cfg = _config(path, False)
    full = None
    for wp, sp in SPLITS:
        grid = WindowGrid(cfg.grid.lat, cfg.grid.lon, WINDOW, wp, sp)
        per_rank = []
        for w in range(wp):
            for s in range(sp):
                store = CountingStore(LocalStore(path, read_only=True))
                ex = TrainingExamples(WeatherSource(path, cfg.data, "train", store=store), stats, cfg, grid, w, s, 0)
                store.reset()
                ex.example(0, 0)
                per_rank.append((len(store.chunks), sum(store.chunks.values()), store.index_bytes))
        chunks, nbytes, index = (np.mean(v) for v in zip(*per_rank))
        full = full or nbytes
        total = sum(b for _, b, _ in per_rank) / full
        print(f"{wp}×{sp:<4} {wp * sp:>5} {chunks:11.0f} {nbytes / 1e3:13.1f} {nbytes / full:7.3f} "
              f"{index / 1e3:13.1f} {total:16.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=40, help="samples timed per configuration")
    p.add_argument("--repeat", type=int, default=3, help="best of this many timings")
    p.add_argument("--times", type=int, default=320, help="6-hourly times in the synthetic store")
    p.add_argument("--store", type=Path, action="append", help="more stores (default: data/heldsuarez.zarr)")
    a = p.parse_args()
    torch.set_num_threads(1)  # threads only add contention at these sizes (DataLoader workers use 1 anyway)
    with tempfile.TemporaryDirectory() as tmp:
        stores = [synthetic_store(Path(tmp) / "synthetic.zarr", 32, 64, days=a.times / 4, levels=(250, 500, 850))]
        stores += [s for s in (a.store or [Path("data/heldsuarez.zarr")]) if s.exists()]
        for path in stores:
            try:
                bench_store(path, a.samples, a.repeat)
            except (KeyError, ValueError) as e:  # e.g. a store still being generated (variables of unequal length)
                print(f"skipped {path}: {e}")


if __name__ == "__main__":
    main()
