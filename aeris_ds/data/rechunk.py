"""``aeris-ds rechunk SRC DST``: a store of whole-globe chunks (WeatherBench2's) → our sharded layout.

WB2 stores hold one chunk per time covering the whole globe, so every WP/SP rank reads the whole field to use
its block of it. The rewrite goes through ``schema.write_store`` (the layout every store of ours has: shards
of several times, small checksummed inner chunks) in slabs of times that fit ``--memory-mb``, with a
progress bar. With ``--config`` it writes the model's view of the store (the config's variables and levels,
its ``data.grid_adapt``, its splits as attributes) with inner chunks of one attention window, so a rank reads
exactly its windows; without, every variable on the whole grid, reoriented (latitude ascending, longitude in
[0, 360)). The source is only read. The output grows in a hidden sibling ``.DST.partial`` that a rerun
resumes; it becomes ``DST`` by one rename when complete.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import xarray as xr
from tqdm import tqdm

from aeris_ds.args import ArgumentParser, config_ref, existing_path, output_path, positive_float
from aeris_ds.config import ExperimentConfig, load_config
from aeris_ds.data import schema
from aeris_ds.data.grid_adapt import adapt_grid
from aeris_ds.errors import MissingPathError, OutputError
from aeris_ds.outputs import check_output, ensure_space, install, space_errors

KIND = "rechunk"  # the output kind (aeris_ds.outputs)
DONE_ATTR = "rechunk_done_times"  # times of DST written completely (a killed append may leave more)
_STATIC_EXTRA = ("toa_incident_solar_radiation",)


def model_view(src: xr.Dataset, cfg: ExperimentConfig | None) -> tuple[xr.Dataset, dict[str, int] | None]:
    """The dataset to write (lazy) and its inner chunks: the config's variables, levels and grid, or everything."""
    d = cfg.data if cfg else None
    grid = adapt_grid(src["latitude"].values, src["longitude"].values, d.grid_adapt if d else "none",
                      cfg.grid.lat if cfg else None)
    rows = grid.rows[grid.real]  # padding is the reader's business: only the store's rows are written
    ds = src.isel(latitude=rows, longitude=grid.cols)
    ds = ds.assign_coords(latitude=grid.lat[grid.real], longitude=grid.lon)
    if d is None:
        return _canonical(ds), None
    keep = [*d.atmospheric, *d.surface, *(n for n in (*schema.STATIC, *_STATIC_EXTRA) if n in ds.data_vars)]
    ds = ds[keep]
    if d.atmospheric:
        ds = ds.sel(level=list(d.levels))
    ds.attrs.update({f"split_{name}": spec for name, spec in d.splits.items()})
    return _canonical(ds), {"latitude": cfg.model.window[0], "longitude": cfg.model.window[1]}


def _canonical(ds: xr.Dataset) -> xr.Dataset:
    """Dims in schema order (time, [number], [level], latitude, longitude) whatever the source's order."""
    order = ("time", schema.ENSEMBLE_DIM, "level", "latitude", "longitude")
    return ds.transpose(*(d for d in order if d in ds.dims), ...)


def rechunk(src: str | os.PathLike, dst: str | os.PathLike, cfg: ExperimentConfig | None = None,
            memory_mb: float = 512, progress: bool = True) -> Path:
    """Write ``src`` in our layout at ``dst`` (resuming ``.dst.partial``); returns ``dst``."""
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise MissingPathError(f"rechunk source {src} does not exist")
    check_output(dst, KIND, inputs=[src])  # never over an existing path, never inside the source
    view, inner = model_view(schema.open_store(src), cfg)
    timed = [n for n in view.data_vars if "time" in view[n].dims]
    per_time = sum(view[n].dtype.itemsize * view[n].size // view.sizes["time"] for n in timed)
    slab = max(1, int(memory_mb * 2**20 // per_time))
    # The shards the whole store would get from write_store (slabs only bound the memory).
    _, per_shard = schema._time_blocks(view, inner or schema._DEFAULT_INNER_CHUNKS, None)
    partial = dst.with_name(f".{dst.name}.partial")
    done = _resume_point(partial, view)
    total = view.sizes["time"]
    rerun = "it continues after the last complete slab"
    ensure_space(partial, per_time * (total - done), "rechunked store", rerun)  # chunks are not compressed
    # A full disk ends the slab being written: DONE_ATTR still counts the complete ones, where a rerun goes on.
    with space_errors(partial, rerun), \
            tqdm(total=total, initial=done, unit="time", desc=f"rechunk {src.name}", disable=not progress) as bar:
        while done < total:
            stop = min(total, done + slab)
            part = view.isel(time=slice(done, stop)).load()
            write_slab(part, partial, done, inner, per_shard)
            schema.update_attrs(partial, {DONE_ATTR: stop})
            bar.update(stop - done)
            done = stop
    install(partial, dst, KIND)
    return dst


def _resume_point(partial: Path, view: xr.Dataset) -> int:
    """Times already complete in ``partial`` (0 if new); refuses a partial store of another source."""
    if not partial.exists():
        return 0
    have = schema.open_store(partial)
    done = int(have.attrs.get(DONE_ATTR, 0))
    same = (sorted(map(str, have.data_vars)) == sorted(map(str, view.data_vars))
            and np.array_equal(have["time"].values[:done], view["time"].values[:done]))
    if not same:
        raise OutputError(f"{partial} holds another rechunk (variables or times differ): remove it to start over")
    return done


def write_slab(part: xr.Dataset, partial: Path, start: int, inner: dict[str, int] | None = None,
               times_per_shard: int | None = None) -> None:
    """First slab creates the store; later ones append, or overwrite times a killed append left unfinished."""
    if not partial.exists():
        schema.write_store(part, partial, inner_chunks=inner, times_per_shard=times_per_shard)
        return
    have = schema.open_store(partial).sizes["time"]
    written = min(have - start, part.sizes["time"])
    if written > 0:  # a killed run's append: resized, maybe not filled; write those times again
        again = part.isel(time=slice(0, written)).drop_vars(
            [n for n in part.variables if "time" not in part[n].dims])
        again.to_zarr(partial, region={"time": slice(start, start + written)}, consolidated=False)
        part = part.isel(time=slice(written, None))
    if part.sizes["time"]:
        schema.write_store(part, partial, append=True)


def read_amplification(chunks: tuple[int, int], shape: tuple[int, int], rows: np.ndarray, cols: np.ndarray) -> float:
    """Grid points a read of store ``rows`` × ``cols`` decodes (whole chunks of ``chunks`` lat × lon in a field of
    ``shape``) over the points it uses."""
    touched = 1
    for idx, size, chunk in ((rows, shape[0], chunks[0]), (cols, shape[1], chunks[1])):
        ids = np.unique(np.asarray(idx) // chunk)
        touched *= int(np.minimum((ids + 1) * chunk, size).sum() - (ids * chunk).sum())
    return touched / (len(np.unique(rows)) * len(np.unique(cols)))


_warned: set[str] = set()


def warn_if_wasteful(source, rows: np.ndarray, cols: np.ndarray, limit: float = 2.0) -> float:
    """Warns once per store when this rank's block makes it read more than ``limit``× its share; returns the ratio."""
    worst = 1.0
    for name, arr in source.arrays.items():
        dims = source.ds[name].dims
        lat, lon = dims.index("latitude"), dims.index("longitude")
        worst = max(worst, read_amplification((arr.chunks[lat], arr.chunks[lon]), (arr.shape[lat], arr.shape[lon]),
                                              source.grid.rows[rows], source.grid.cols[cols]))
    key = str(source.path)
    if worst > limit and key not in _warned:
        _warned.add(key)
        suggestion = source.path.with_name(source.path.name.removesuffix(".zarr") + "-sharded.zarr")
        warnings.warn(f"{source.path}: its chunks make each rank read {worst:.1f}× its share of every field; "
                      f"rewrite it once with `aeris-ds rechunk {source.path} {suggestion} --config <your.yaml>`",
                      stacklevel=2)
    return worst


def main(argv: list[str] | None = None) -> None:
    """``aeris-ds rechunk SRC DST [--config YAML] [--memory-mb N]``."""
    p = ArgumentParser(prog="aeris-ds rechunk", description=__doc__.splitlines()[0])
    p.add_argument("src", type=existing_path, help="zarr store to read (v2 or v3, never modified)")
    p.add_argument("dst", type=output_path, help="new store (sharded zarr v3)")
    p.add_argument("--config", type=config_ref,
                   help="experiment YAML: write its variables, levels and grid, window-sized chunks")
    p.add_argument("--memory-mb", type=positive_float, default=512, help="times per slab fit this much memory")
    a = p.parse_args(argv)
    print(rechunk(Path(a.src), Path(a.dst), load_config(a.config) if a.config else None, a.memory_mb))
