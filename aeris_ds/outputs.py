"""Safe outputs: no command clobbers its inputs or anything it did not write.

Every output records its kind (``forecast``, ``evaluation``, ``ingest``, ``heldsuarez``, ``stats``): a zarr
store in its group attribute ``aeris_ds_output``, a JSON file in that top-level key, another directory in a
marker file ``.aeris-ds-output``. A command may write to a path only when

- the path is not, does not contain and is not inside any of its inputs (symlinks resolved), and
- nothing is there yet, or an output of the same kind is there: resumed or extended by commands that can
  (forecast, ingest, heldsuarez), otherwise replaced only with ``--overwrite``.

New outputs are written into a temporary sibling, marked, and renamed into place when complete, so a
killed command leaves either the old output or the new one, never a mix. Files the code keeps for itself
(checkpoint parts, resume states, run logs) are replaced the same way, without those checks: ``atomic_replace``.

Out of space: a write whose size is known checks the free space first (``ensure_space``); any other write
that fails for want of space (ENOSPC, EDQUOT, EFBIG, torch.save's short write) inside ``writing``,
``atomic_replace``, ``install`` or ``space_errors`` becomes an ``OutOfSpaceError`` naming the output, and its
temporary sibling is removed, so the old output stays and the rerun starts clean.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from aeris_ds.errors import OutOfSpaceError, OutputError, free_bytes, human_bytes, out_of_space

KIND_KEY = "aeris_ds_output"
MARKER = ".aeris-ds-output"


def _is_zarr(path: Path) -> bool:
    return any((path / name).exists() for name in ("zarr.json", ".zgroup"))


def kind_of(path: str | os.PathLike) -> str | None:
    """The kind recorded in an existing output, or None (not written by aeris-ds, or unreadable)."""
    path = Path(path)
    try:
        if path.is_dir() and _is_zarr(path):
            import zarr

            return zarr.open_group(str(path), mode="r").attrs.get(KIND_KEY)
        if path.is_dir():
            return (path / MARKER).read_text().strip() if (path / MARKER).is_file() else None
        if path.suffix == ".json":
            doc = json.loads(path.read_text())
            return doc.get(KIND_KEY) if isinstance(doc, dict) else None
    except (OSError, ValueError, KeyError):
        return None
    return None


def mark(path: str | os.PathLike, kind: str) -> None:
    """Record ``kind`` in a freshly written output (zarr attribute, JSON key or marker file)."""
    path = Path(path)
    if path.is_dir() and _is_zarr(path):
        import zarr

        zarr.open_group(str(path), mode="r+", use_consolidated=False).attrs[KIND_KEY] = kind
        if (path / ".zmetadata").exists():  # keep consolidated zarr v2 metadata in step
            zarr.consolidate_metadata(str(path), zarr_format=2)
    elif path.is_dir():
        (path / MARKER).write_text(kind + "\n")
    elif path.suffix == ".json":
        path.write_text(json.dumps({**json.loads(path.read_text()), KIND_KEY: kind}, indent=1))
    else:
        raise ValueError(f"cannot mark {path}: not a directory or a JSON file")


def _overlap(out: Path, inp: Path) -> str | None:
    o, i = out.resolve(), inp.resolve()
    if o == i:
        return "is"
    if o in i.parents:
        return "contains"
    if i in o.parents:
        return "is inside"
    return None


def check_output(out: str | os.PathLike, kind: str, *, inputs: Iterable[str | os.PathLike] = (),
                 overwrite: bool = False, resumable: bool = False) -> bool:
    """Raise ``OutputError`` unless ``out`` may be written as ``kind``.

    Returns True when ``out`` holds an output of this kind to resume or extend (``resumable`` and not
    ``overwrite``); False when it is to be created, or replaced (``overwrite``).
    """
    out = Path(out)
    for inp in inputs:
        how = _overlap(out, Path(inp))
        if how:
            raise OutputError(f"output {out} {how} the input {inp}: choose another output path")
    if not out.exists() and not out.is_symlink():
        return False
    found = kind_of(out)
    if found != kind:
        what = f"an aeris-ds {found} output, not a {kind}" if found else \
            f"not an output of aeris-ds (no {kind} marker)"
        raise OutputError(f"{out} exists and is {what}; refusing to overwrite it: choose another output path")
    if overwrite:
        return False
    if resumable:
        return True
    raise OutputError(f"{out} exists (a {kind} output): pass --overwrite to replace it")


def _sibling(path: Path, tag: str) -> Path:
    """A hidden sibling with the same suffix (``.x.tmp-1a2b3c4d.json`` for ``x.json``)."""
    return path.with_name(f".{path.stem}.{tag}-{uuid.uuid4().hex[:8]}{path.suffix}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def ensure_space(path: str | os.PathLike, need: int, what: str, rerun: str = "", *, free: int | None = None,
                 every_rank: bool | None = None) -> None:
    """Raise OutOfSpaceError before writing when ``need`` bytes (``what`` at ``path``) exceed the free space of
    its filesystem (``free``: that figure, when the caller has it; ``rerun``: what rerunning does)."""
    free = free_bytes(path) if free is None else free
    if need > free:
        raise OutOfSpaceError(f"not enough space for {what} {path}: needs {human_bytes(need)}, {human_bytes(free)} "
                              "free there", rerun=rerun, every_rank=every_rank)


@contextmanager
def space_errors(path: str | os.PathLike, rerun: str = "") -> Iterator[None]:
    """A failure for want of space inside the block becomes OutOfSpaceError naming ``path`` (the output) and what
    rerunning does (``rerun``); any other error passes unchanged."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        failure = out_of_space(err, path, rerun)
        if failure is None or failure is err:
            raise
        raise failure from err


@contextmanager
def writing(out: str | os.PathLike, kind: str | None = None, rerun: str = "") -> Iterator[Path]:
    """Yield a temporary sibling of ``out`` to write into; on success mark it and rename it into place.

    An existing ``out`` is replaced only when it is an output of the same ``kind`` (callers decide with
    ``check_output`` whether replacing is wanted); the old one is removed only after the new one is in place.
    ``kind=None`` writes an unmarked output and never replaces anything. ``rerun``: what rerunning does, for the
    error when the filesystem fills up.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(out, "tmp")
    try:
        with space_errors(out, rerun):
            yield tmp
            install(tmp, out, kind)
    finally:
        _discard(tmp)


def _discard(tmp: Path, tries: int = 50) -> None:
    """Remove a temporary output. After a failed zarr write, writes zarr started beside it may still be
    finishing on its event loop and add files while the tree is removed: try again until they are done."""
    for _ in range(tries - 1):
        try:
            return _remove(tmp)
        except OSError:
            time.sleep(0.1)
    _remove(tmp)


def install(done: str | os.PathLike, out: str | os.PathLike, kind: str | None) -> None:
    """Mark the complete output ``done`` (a sibling of ``out``) as ``kind`` and rename it to ``out``.

    An existing ``out`` is replaced only when it is an output of the same ``kind``, and removed only after
    the new one is in place; ``kind=None`` installs an unmarked output and never replaces anything.
    """
    done, out = Path(done), Path(out)
    if kind is not None:
        with space_errors(out):
            mark(done, kind)
    old = None
    if out.exists() or out.is_symlink():
        if kind is None or kind_of(out) != kind:
            what = "" if kind is None else f" and is not a {kind} output"
            raise OutputError(f"{out} exists{what}; refusing to replace it")
        old = _sibling(out, "old")
        os.rename(out, old)
    try:
        os.rename(done, out)
    except OSError:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        _remove(old)


@contextmanager
def atomic_replace(path: str | os.PathLike, rerun: str = "") -> Iterator[Path]:
    """Yield the hidden sibling ``.<name>.tmp`` of ``path`` to write into; when the block completes, rename
    it over ``path``. For files the code owns and replaces at will; a kill leaves the old file or the new
    one (and its sibling, which the next write reuses). ``rerun`` as for ``writing``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with space_errors(path, rerun):
            yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
