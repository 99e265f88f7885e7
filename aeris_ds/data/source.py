"""Reading WeatherBench2-schema zarr stores: the channels a config names, one lat/lon block at a time."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path

import numpy as np
import xarray as xr
import zarr
from tqdm import tqdm

from aeris_ds.config import DataConfig
from aeris_ds.data.grid_adapt import adapt_grid
from aeris_ds.data.schema import STATIC, open_store
from aeris_ds.data.splits import split_slice, split_spec
from aeris_ds.errors import DataError, MissingPathError

# Bytes of one streamed block of a rank's channels (statistics, preload): whole inner chunks along time
# up to this, so that a block reads each chunk once without holding much of the split.
_BLOCK_BYTES = 64 * 2**20


class CountingStore(zarr.storage.WrapperStore):
    """A zarr store wrapper that records each data read (tests and benchmarks of per-rank block reads).

    ``chunks`` maps (storage key, byte offset) of every inner chunk (or whole unsharded chunk) read to its
    size; ``index_bytes`` sums the shard indexes, read as a suffix of a shard file. Metadata is not counted.
    """

    def __init__(self, store: zarr.abc.store.Store):
        super().__init__(store)
        self.reset()

    def reset(self) -> None:
        self.chunks: dict[tuple[str, int], int] = {}
        self.index_bytes = 0

    def _record(self, key: str, byte_range: object, buf: object) -> None:
        if buf is None or key.rsplit("/", 1)[-1].startswith((".z", "zarr.json")):
            return
        if isinstance(byte_range, zarr.abc.store.SuffixByteRequest):
            self.index_bytes += len(buf)
        else:
            self.chunks[key, getattr(byte_range, "start", 0)] = len(buf)

    async def get(self, key, prototype, byte_range=None):  # zarr's signature
        buf = await self._store.get(key, prototype, byte_range)
        self._record(key, byte_range, buf)
        return buf

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        bufs = await self._store.get_partial_values(prototype, key_ranges)
        for (key, byte_range), buf in zip(key_ranges, bufs, strict=True):
            self._record(key, byte_range, buf)
        return bufs


class ShardIndexCache(zarr.storage.WrapperStore):
    """Keeps the shard indexes (a suffix read of each shard file) once read.

    zarr re-reads a shard's whole index for every read of one of its inner chunks: for a store with many times
    per shard that is several times the bytes of a rank's block. A training source reads a store nobody
    appends to while it runs, so the indexes cannot go stale.
    """

    def __init__(self, store: zarr.abc.store.Store):
        super().__init__(store)
        self._index: dict[tuple[str, int], object] = {}

    async def get(self, key, prototype, byte_range=None):  # zarr's signature
        if not isinstance(byte_range, zarr.abc.store.SuffixByteRequest):
            return await self._store.get(key, prototype, byte_range)
        cached = self._index.get((key, byte_range.suffix))
        if cached is None:
            cached = self._index[key, byte_range.suffix] = await self._store.get(key, prototype, byte_range)
        return cached


def _as_slice(index: np.ndarray | slice) -> np.ndarray | slice:
    """A run of consecutive indices as a slice: zarr copies slices blockwise, index arrays element by element
    (30× slower for a whole block)."""
    if isinstance(index, np.ndarray) and index.ndim == 1 and len(index) and np.all(np.diff(index) == 1):
        return slice(int(index[0]), int(index[-1]) + 1)
    return index


def open_dataset(path: str | Path, store: zarr.abc.store.Store | None = None) -> xr.Dataset:
    """Lazy open (no dask): every read below goes straight to the chunks it touches.

    ``store`` (a zarr store object for ``path``, e.g. a wrapper counting the bytes read) replaces the path.
    """
    path = Path(path)
    if store is None and not path.exists():
        raise MissingPathError(f"data store {path} does not exist")
    return open_store(path if store is None else store, chunks=None)


class WeatherSource:
    """Channels of a store in the model's order: atmospheric variables × levels, then surface variables.

    Rows and columns are the model grid's (``data.grid_adapt`` of the store's grid, see grid_adapt.py):
    ``grid`` (the model's lat × lon) is checked against it when given. A sample is an initial time and the
    ``steps`` states after it, one lead apart (1 for a diffusion pair, K for a K-step rollout). The store is
    only ever read.
    """

    def __init__(self, path: str | Path, data: DataConfig, split: str | None = None,
                 store: zarr.abc.store.Store | None = None, grid: tuple[int, int] | None = None, steps: int = 1):
        self.path, self.cfg, self.steps = Path(path), data, steps
        self.ds = open_dataset(path, store)
        self._check_schema()
        try:
            self.grid = adapt_grid(self.ds["latitude"].values, self.ds["longitude"].values, data.grid_adapt,
                                   None if grid is None else grid[0])
        except ValueError as err:
            raise DataError(f"grid of {self.path}: {err}", every_rank=True) from None
        if grid is not None and self.grid.shape != tuple(grid):
            raise DataError(f"{self.grid.description} with data.grid_adapt {data.grid_adapt}, but the config grid "
                            f"is {grid[0]}×{grid[1]} ({self.path}): set grid.lat/lon or data.grid_adapt",
                            every_rank=True)
        # Samples are read through the zarr arrays: xarray's lazy indexing costs ~1.7× the raw read per call.
        base = zarr.storage.LocalStore(path, read_only=True) if store is None else store
        self._group = group = zarr.open_group(ShardIndexCache(base), mode="r")
        self.arrays = {name: group[name] for name in data.atmospheric + data.surface}
        self.times = self.ds["time"].values
        self.split_slice = self.split_range(split)
        step = np.diff(self.times[:2]).astype("timedelta64[h]").astype(int)[0] if len(self.times) > 1 else 0
        lead = data.lead_hours
        if step <= 0 or lead % step:
            raise DataError(f"lead {lead} h is not a multiple of the store's time step {step} h ({path})",
                            every_rank=True)
        self.lead_steps = lead // step
        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray, int] | None = None

    def _check_schema(self) -> None:
        for name in self.cfg.atmospheric + self.cfg.surface:
            if name not in self.ds:
                raise DataError(f"variable {name!r} is missing from {self.path} (has: {sorted(self.ds.data_vars)})",
                                every_rank=True)
        expected = {"atm": ("time", "level", "latitude", "longitude"), "sfc": ("time", "latitude", "longitude")}
        for kind, names in (("atm", self.cfg.atmospheric), ("sfc", self.cfg.surface)):
            for name in names:  # time first; the other dims in any order (read_times transposes)
                dims = self.ds[name].dims
                if dims[:1] != ("time",) or sorted(dims) != sorted(expected[kind]):
                    raise DataError(f"{name} in {self.path} has dims {dims}, expected {expected[kind]}",
                                    every_rank=True)
                if {"scale_factor", "add_offset"} & set(self.ds[name].encoding):
                    raise DataError(f"{name} in {self.path} is packed (scale_factor/add_offset): store it as floats",
                                    every_rank=True)
        if self.cfg.atmospheric:
            have = set(int(v) for v in self.ds["level"].values)
            missing = [lev for lev in self.cfg.levels if lev not in have]
            if missing:
                raise DataError(f"levels {missing} hPa missing from {self.path} (has {sorted(have)})", every_rank=True)
        dt = np.diff(self.ds["time"].values)
        if len(dt) and not np.all(dt == dt[0]):
            gap = int(np.argmax(dt != dt[0]))
            raise DataError(f"time gap in {self.path} after {self.ds['time'].values[gap]}", every_rank=True)
        if "statics" in self.cfg.forcings:
            missing = [name for name in STATIC if name not in self.ds]
            if missing:
                raise DataError(f"{', '.join(missing)} missing from {self.path}, and data.forcings uses `statics`: "
                                "add the static fields to the store or drop `statics` from the config",
                                every_rank=True)

    def split_range(self, split: str | None) -> slice:
        """Index range of a split: ``data.splits`` in the YAML, else the store's ``split_<name>`` attribute;
        everything when ``split`` is None."""
        if split is None:
            return slice(0, len(self.times))
        found = split_spec(split, self.cfg.splits, self.ds.attrs)
        if found is None:
            raise DataError(f"no split {split!r}: set data.splits.{split}: START/END in the config "
                            f"({self.path} has no attribute split_{split})", every_rank=True)
        try:
            part = split_slice(self.times, found[0])
        except ValueError as err:  # a malformed START/END
            raise DataError(f"{err} ({found[1]})", every_rank=True) from None
        if part.stop <= part.start:
            span = self._span(self.times[[0, -1]])
            raise DataError(f"split {split} {found[0]!r} ({found[1]}) holds no time of {self.path} ({span})",
                            every_rank=True)
        return part

    @property
    def lat(self) -> np.ndarray:
        return self.grid.lat

    @property
    def lon(self) -> np.ndarray:
        return self.grid.lon

    @cached_property
    def level_index(self) -> np.ndarray:
        levels = [int(v) for v in self.ds["level"].values] if self.cfg.atmospheric else []
        return np.array([levels.index(lev) for lev in self.cfg.levels], dtype=np.int64)

    @property
    def n_samples(self) -> int:
        """Initial times t in the split whose targets up to t + steps·lead are also in the split."""
        return max(0, self.split_slice.stop - self.split_slice.start - self.steps * self.lead_steps)

    def time_index(self, sample: int) -> int:
        return self.split_slice.start + sample

    def read(self, t: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """[C, len(rows), len(cols)] float32 at time index t; only the chunks of that block are read."""
        return self.read_many([t], rows, cols)[0]

    def read_many(self, ts: list[int], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """[len(ts), C, len(rows), len(cols)] at these time indices (e.g. a state and its target): one read
        per variable, from the preloaded block when there is one."""
        if self._cache is not None and self._cache[0] is rows and self._cache[1] is cols:
            return self._cache[2][np.asarray(ts) - self._cache[3]]
        return self.read_times(np.asarray(ts), rows, cols)

    def read_times(self, times: slice | np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """[T, C, len(rows), len(cols)] float32: one zarr read per variable for these times (a slice or indices)."""
        out = [self.read_variable(name, times, rows, cols) for name in self.cfg.atmospheric + self.cfg.surface]
        field = np.concatenate([b.reshape(b.shape[0], -1, len(rows), len(cols)) for b in out], axis=1)
        finite = np.isfinite(field).all(axis=(2, 3))
        if not finite.all():
            t, c = np.argwhere(~finite)[0]
            when = self._span(self.times[times][t:t + 1])
            raise DataError(f"non-finite values in {self.cfg.channel_names[c]} at {when} in {self.path} "
                            "(a missing chunk reads as the fill value NaN)")
        return field

    def read_variable(self, name: str, times: slice | np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """[T, (level,) len(rows), len(cols)] float32 of one variable, model rows/cols mapped to the store's."""
        arr = self.arrays.get(name)
        if arr is None:
            arr = self.arrays[name] = self._group[name]
        by_dim = {"time": times, "level": self.level_index, "latitude": self.grid.rows[rows],
                  "longitude": self.grid.cols[cols]}
        dims = self.ds[name].dims
        index = tuple(_as_slice(by_dim[d]) for d in dims)
        try:
            block = arr.oindex[index]
        except Exception as e:  # zarr raises codec-specific errors (a checksum mismatch) for damaged chunks
            cause = "crc32c checksum mismatch" if "checksum" in str(e) else f"{type(e).__name__}: {e}"
            raise DataError(f"cannot read {name} at {self._span(self.times[times])} from {self.path}: corrupt or "
                            f"unreadable chunk in {self._files(name, index)} ({cause}); `aeris-ds data verify "
                            f"{self.path}` lists every damaged chunk") from e
        canonical = [d for d in ("time", "level", "latitude", "longitude") if d in dims]
        return np.transpose(block, [dims.index(d) for d in canonical]).astype(np.float32, copy=False)

    @staticmethod
    def _span(times: np.ndarray) -> str:
        t = np.datetime_as_string(times, unit="m")
        return t[0] if len(t) == 1 else f"{t[0]}..{t[-1]}"

    def _files(self, name: str, index: tuple) -> str:
        """Storage keys (shards, or chunks when unsharded) that a read of ``index`` touches."""
        arr = self.arrays[name]
        per_file = arr.shards or arr.chunks
        axes = [np.unique(np.arange(n)[i] // f) for i, n, f in zip(index, arr.shape, per_file, strict=True)]
        keys = [f"{name}/{arr.metadata.encode_chunk_key(tuple(int(c) for c in coords))}"
                for coords in np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(axes))]
        return ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")

    def time_blocks(self, start: int, stop: int, rows: np.ndarray, cols: np.ndarray) -> list[tuple[int, int]]:
        """[start, stop) cut at the store's time-chunk boundaries into blocks of whole chunks (≤ ~64 MiB of
        this block), so that streaming the blocks reads every chunk once."""
        first = self.arrays[next(iter(self.arrays))]
        chunk = first.chunks[0]
        per_time = 4 * self.cfg.n_channels * len(rows) * len(cols)
        budget = max(1, _BLOCK_BYTES // per_time)
        step = chunk * (budget // chunk) if budget >= chunk else budget
        edges = sorted({start, stop, *range((start // step + 1) * step, stop, step)})
        return list(zip(edges[:-1], edges[1:], strict=True))

    def stream(self, start: int, stop: int, rows: np.ndarray, cols: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """(first time index, [T, C, rows, cols] block) over [start, stop) in time order; the next block is
        read on a thread while the caller works on this one."""
        blocks = self.time_blocks(start, stop, rows, cols)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream") as pool:
            ahead = [pool.submit(self.read_times, slice(a, b), rows, cols) for a, b in blocks[:1]]
            for i, (a, _) in enumerate(blocks):
                block = ahead.pop().result()
                if i + 1 < len(blocks):
                    ahead.append(pool.submit(self.read_times, slice(*blocks[i + 1]), rows, cols))
                yield a, block

    def preload(self, rows: np.ndarray, cols: np.ndarray, progress: bool = True) -> None:
        """Hold this block of the whole split (plus the lead) in memory: only this rank's share is read, as
        whole time chunks, once."""
        start, stop = self.split_slice.start, min(len(self.times), self.split_slice.stop)
        out = np.empty((stop - start, self.cfg.n_channels, len(rows), len(cols)), np.float32)
        for a, block in tqdm(self.stream(start, stop, rows, cols), desc="preload", disable=not progress,
                             total=len(self.time_blocks(start, stop, rows, cols)), leave=False):
            out[a - start:a - start + len(block)] = block
        self._cache = (rows, cols, out, start)

    def static(self, name: str, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        field = self.ds[name].isel(latitude=self.grid.rows[rows], longitude=self.grid.cols[cols])
        return np.asarray(field.transpose("latitude", "longitude").values, dtype=np.float32)
