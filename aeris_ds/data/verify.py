"""``aeris-ds data verify STORE``: read every chunk of every array and report each damaged one.

A damaged inner chunk fails its crc32c checksum (stores written since checksums were added) or its
decompression; a missing shard file would read as NaN. Each shard is read whole; only a shard that fails is
read again chunk by chunk, to name every bad chunk: variable, time range, file.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from tqdm import tqdm

from aeris_ds.args import ArgumentParser, existing_path
from aeris_ds.data.schema import open_store
from aeris_ds.errors import DataError, MissingPathError


@dataclass
class BadChunk:
    variable: str
    when: str  # time range of the chunk, or "" for arrays without time
    file: str  # storage key relative to the store
    cause: str

    def __str__(self) -> str:
        at = f" at {self.when}" if self.when else ""
        return f"{self.variable}{at}: {self.file}: {self.cause}"


def _dims(arr: zarr.Array) -> tuple[str, ...]:
    names = getattr(arr.metadata, "dimension_names", None) or arr.attrs.get("_ARRAY_DIMENSIONS") or ()
    return tuple(names)


def _regions(shape: tuple[int, ...], block: tuple[int, ...], within: tuple[slice, ...] | None = None):
    """Slices of every block of the array (or of the region ``within``), with the block's grid coordinates."""
    within = within or tuple(slice(0, n) for n in shape)
    ranges = [range(w.start // b, math.ceil(w.stop / b)) for w, b in zip(within, block, strict=True)]
    for coords in itertools.product(*ranges):
        yield coords, tuple(slice(c * b, min((c + 1) * b, n)) for c, b, n in zip(coords, block, shape, strict=True))


def _span(times: np.ndarray | None, region: tuple[slice, ...], dims: tuple[str, ...]) -> str:
    if times is None or "time" not in dims:
        return ""
    t = np.datetime_as_string(times[region[dims.index("time")]], unit="m")
    return t[0] if len(t) == 1 else f"{t[0]}..{t[-1]}"


def verify(path: str | Path, progress: bool = True) -> tuple[int, list[BadChunk]]:
    """(number of files read, every bad chunk) of the store at ``path``."""
    path = Path(path)
    if not path.exists():
        raise MissingPathError(f"store {path} does not exist")
    try:
        group = zarr.open_group(str(path), mode="r")
        times = open_store(path)["time"].values if "time" in group else None
    except Exception as err:  # zarr/xarray raise many types for unreadable metadata
        raise DataError(f"cannot open {path} as a zarr store: {err}") from err
    arrays = sorted(group.arrays(), key=lambda item: item[0])
    total = sum(math.prod(math.ceil(n / s) for n, s in zip(a.shape, a.shards or a.chunks, strict=True))
                for _, a in arrays)
    bad: list[BadChunk] = []
    with tqdm(total=total, desc=f"verify {path.name}", unit="file", disable=not progress) as bar:
        for name, arr in arrays:
            dims, per_file = _dims(arr), arr.shards or arr.chunks
            for coords, region in _regions(arr.shape, per_file):
                key = f"{name}/{arr.metadata.encode_chunk_key(coords)}"
                bar.update(1)
                if not (path / key).exists():
                    bad.append(BadChunk(name, _span(times, region, dims), key, "file missing (reads as NaN)"))
                    continue
                try:
                    arr[region]
                except Exception:  # a checksum or codec error somewhere in this file: find each bad chunk
                    for _, chunk in _regions(arr.shape, arr.chunks, region):
                        try:
                            arr[chunk]
                        except Exception as err:
                            cause = ("crc32c checksum mismatch (damaged bytes)" if "checksum" in str(err) else
                                     f"{type(err).__name__}: {err}".splitlines()[0])
                            bad.append(BadChunk(name, _span(times, chunk, dims), key, cause))
    return total, bad


def has_checksums(path: str | Path) -> bool:
    """Whether the store's data arrays carry a crc32c checksum per inner chunk (not only per shard index)."""
    def inner(arr: zarr.Array) -> tuple:
        if arr.metadata.zarr_format != 3:
            return ()
        codecs = arr.metadata.codecs
        return codecs[0].codecs if isinstance(codecs[0], zarr.codecs.ShardingCodec) else codecs

    return any(isinstance(c, zarr.codecs.Crc32cCodec) for _, a in zarr.open_group(str(path), mode="r").arrays()
               if a.ndim > 1 for c in inner(a))


def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(prog="aeris-ds data verify", description=__doc__.splitlines()[0])
    p.add_argument("store", type=existing_path)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    args.store = Path(args.store)
    total, bad = verify(args.store, progress=not args.no_progress)
    for chunk in bad:
        print(f"bad chunk: {chunk}")
    if not has_checksums(args.store):
        print(f"note: {args.store} was written without chunk checksums: only undecodable chunks can be found")
    if bad:
        raise DataError(f"{args.store}: {len(bad)} bad chunk(s) in {len({c.file for c in bad})} of {total} "
                        "files (listed above)")
    print(f"{args.store}: all {total} files read without error")
