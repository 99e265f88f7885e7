"""Train/valid/test splits as time ranges: ``"START/END"``, both ends inclusive at the precision written.

``"1979-01-01/2017-12-31"`` holds every time of 2017-12-31 (00 to 18 UTC), not only its midnight: the end
bound is exclusive one unit of its own precision later. The YAML's ``data.splits`` wins; a store's
``split_<name>`` attribute (what our own stores carry) is the fallback, so a read-only WeatherBench2 store,
which has none, needs no copy to be split.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def parse_range(spec: str) -> tuple[np.datetime64, np.datetime64]:
    """``"START/END"`` → (first time included, first time excluded); ValueError naming the spec otherwise."""
    start, sep, end = str(spec).partition("/")
    try:
        if not sep:
            raise ValueError("no '/'")
        first, last = np.datetime64(start.strip()), np.datetime64(end.strip())
    except ValueError as err:
        raise ValueError(f"split {spec!r} must look like START/END, e.g. 1979-01-01/2017-12-31 ({err})") from None
    stop = last + np.timedelta64(1, np.datetime_data(last.dtype)[0])
    if stop <= first:
        raise ValueError(f"split {spec!r} ends before it starts")
    return first, stop


def split_spec(name: str, configured: Mapping[str, str], attrs: Mapping[str, object]) -> tuple[str, str] | None:
    """(range, where it came from) of split ``name``: the YAML first, then the store attribute; None if neither."""
    if name in configured:
        return configured[name], f"data.splits.{name}"
    attr = attrs.get(f"split_{name}")
    return (str(attr), f"store attribute split_{name}") if attr else None


def split_slice(times: np.ndarray, spec: str) -> slice:
    """Index range of ``times`` (ascending) inside the range ``spec``; may be empty."""
    first, stop = parse_range(spec)
    times = np.asarray(times)
    return slice(int(np.searchsorted(times, first, "left")), int(np.searchsorted(times, stop, "left")))
