"""Streaming, resumable ensemble-forecast store in the WeatherBench2 forecast layout.

The whole store is created up front (every variable full-size, fill NaN, one chunk per
(init, lead, member) slab), so a forecast writes each slab the moment it exists and holds nothing
else in memory: 90 days × 50 members never need to fit in RAM. Layout, as WB2 ensemble forecasts:
dims ``time`` (init), ``prediction_timedelta``, ``number`` (member), [``level``], ``latitude``,
``longitude``; WB2 variable names; physical units; zarr format 2 with consolidated metadata, so
``xarray.open_zarr(path)`` opens it as is.

Progress: ``completed_steps[time, number]`` (int32, visible to xarray so evaluation can mask
unfinished members) counts the leading leads whose slabs are all written; it is bumped only after
the slabs, so a killed forecast never claims a step it did not finish. For exact resumes the
rollout also keeps the member's last *model* state (whatever dtype/shape the network works in,
e.g. normalized float32) in the sub-group ``rollout/`` — physical float32 fields are not a
lossless record of it. Two slots alternate by step parity, so a crash while saving step k leaves
the state of step k − 1 intact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

FORECAST_DIMS = ("time", "prediction_timedelta", "number")
KIND = "forecast"  # the store's output kind (aeris_ds.outputs)
PROGRESS = "completed_steps"
STATE_GROUP = "rollout"
STATE_ARRAY = "state"


class ForecastStore:
    """A WB2-layout forecast zarr opened for region writes; build with ``create`` or ``open``."""

    def __init__(self, path: str | Path, group: zarr.Group) -> None:
        self.path = Path(path)
        self._group = group
        ds = xr.open_zarr(path)
        self.init_times: np.ndarray = ds["time"].values
        self.leads: np.ndarray = ds["prediction_timedelta"].values
        self.members = ds.sizes["number"]
        self.variables: dict[str, bool] = {
            str(name): "level" in var.dims
            for name, var in ds.data_vars.items()
            if var.dims[:3] == FORECAST_DIMS
        }
        self._arrays = {name: group[name] for name in self.variables}  # opening reads metadata: once
        self._progress = group[PROGRESS]
        self._state = group[f"{STATE_GROUP}/{STATE_ARRAY}"] if STATE_GROUP in group else None

    @classmethod
    def create(
        cls,
        path: str | Path,
        init_times: Sequence[np.datetime64] | np.ndarray,
        leads: Sequence[np.timedelta64] | np.ndarray,
        members: int,
        variables: Mapping[str, Sequence[int] | None],
        latitude: np.ndarray,
        longitude: np.ndarray,
        attrs: Mapping[str, Any] | None = None,
    ) -> ForecastStore:
        """Create a full-size store at a new ``path``; ``variables`` maps a WB2 name to its levels or None.

        All level lists must be equal: WB2 has a single ``level`` dimension.
        """
        level_lists = {tuple(v) for v in variables.values() if v is not None}
        if len(level_lists) > 1:
            raise ValueError(f"variables with levels must share one level list, got {sorted(level_lists)}")
        if members < 1 or not variables:
            raise ValueError(f"need members >= 1 and at least one variable, got {members}, {list(variables)}")
        coords: dict[str, Any] = {
            "time": np.asarray(init_times, dtype="datetime64[ns]"),
            "prediction_timedelta": np.asarray(leads, dtype="timedelta64[ns]"),
            "number": np.arange(members),
            "latitude": np.asarray(latitude),
            "longitude": np.asarray(longitude),
        }
        if level_lists:
            coords["level"] = np.asarray(level_lists.pop())
        xr.Dataset(coords=coords, attrs=dict(attrs or {})).to_zarr(
            path, mode="w-", consolidated=False, zarr_format=2
        )
        group = zarr.open_group(path, mode="r+", use_consolidated=False)
        n_init, n_lead = len(coords["time"]), len(coords["prediction_timedelta"])
        grid = (len(coords["latitude"]), len(coords["longitude"]))
        for name, levels in variables.items():
            dims = FORECAST_DIMS + (("level",) if levels is not None else ()) + ("latitude", "longitude")
            slab = ((len(coords["level"]),) if levels is not None else ()) + grid
            group.create_array(
                name, shape=(n_init, n_lead, members, *slab), chunks=(1, 1, 1, *slab), dtype="float32",
                fill_value=np.nan, attributes={"_ARRAY_DIMENSIONS": list(dims)},
            )
        # No fill value (xarray would mask it as missing); zeros are written explicitly instead.
        group.create_array(
            PROGRESS, shape=(n_init, members), chunks=(1, 1), dtype="int32", fill_value=None,
            attributes={"_ARRAY_DIMENSIONS": ["time", "number"],
                        "description": "leading lead times fully written per (init, member)"},
        )[:] = 0
        zarr.consolidate_metadata(path, zarr_format=2)
        return cls(path, group)

    @classmethod
    def open(cls, path: str | Path) -> ForecastStore:
        """Open an existing store for writing (resume)."""
        return cls(path, zarr.open_group(path, mode="r+", use_consolidated=False))

    def write(self, init_idx: int, lead_idx: int, member: int, fields: Mapping[str, np.ndarray]) -> None:
        """Write one (init, lead, member) slab of every variable, in physical units."""
        self._check_index(init_idx, lead_idx, member)
        if set(fields) != set(self.variables):
            raise ValueError(f"slab needs exactly variables {sorted(self.variables)}, got {sorted(fields)}")
        for name, value in fields.items():
            arr = self._arrays[name]
            value = np.asarray(value, dtype=np.float32)
            if value.shape != arr.shape[3:]:
                raise ValueError(f"{name}: slab shape {value.shape} != store slab shape {arr.shape[3:]}")
            arr[init_idx, lead_idx, member] = value

    def completed(self, init_idx: int, member: int) -> int:
        """Number of leading leads fully written for this (init, member)."""
        self._check_index(init_idx, 0, member)
        return int(self._progress[init_idx, member])

    def mark_complete(self, init_idx: int, member: int, steps: int) -> None:
        """Record that the first ``steps`` leads of (init, member) are written; call after the writes."""
        self._check_index(init_idx, max(steps - 1, 0), member)
        self._progress[init_idx, member] = steps

    def ensure_state(self, shape: tuple[int, ...], dtype: np.dtype | str) -> None:
        """Create the lossless resume-state array for per-member states of ``shape``, or check it."""
        full = (len(self.init_times), self.members, 2, *shape)
        if self._state is None:
            self._state = self._group.create_group(STATE_GROUP).create_array(
                STATE_ARRAY, shape=full, chunks=(1, 1, 1, *shape), dtype=dtype, fill_value=0
            )
            zarr.consolidate_metadata(self.path, zarr_format=2)
        elif self._state.shape != full or self._state.dtype != np.dtype(dtype):
            raise ValueError(
                f"{self.path}: stored resume state is {self._state.shape[3:]} {self._state.dtype}, "
                f"this rollout's state is {shape} {np.dtype(dtype)}"
            )

    def save_state(self, init_idx: int, member: int, step: int, state: np.ndarray) -> None:
        """Keep the model state after ``step`` (slot step % 2); call before ``mark_complete``."""
        self._state_array()[init_idx, member, step % 2] = state

    def load_state(self, init_idx: int, member: int, step: int) -> np.ndarray:
        """The model state saved after ``step`` (valid for step == completed(init_idx, member))."""
        return self._state_array()[init_idx, member, step % 2]

    def bytes_left(self, steps: int) -> int:
        """Bytes (uncompressed) of the slabs and resume states still to write for the first ``steps`` leads of
        every (init, member): what a forecast needs free before it starts."""
        left = np.clip(steps - self._progress[:], 0, None)
        slab = sum(a.dtype.itemsize * math.prod(a.shape[3:]) for a in self._arrays.values())
        state = 0 if self._state is None else self._state.dtype.itemsize * math.prod(self._state.shape[3:])
        return int(left.sum()) * slab + int((left > 0).sum()) * 2 * state

    def space_needed(self, steps: int) -> int:
        """``bytes_left`` at the best compression float32 fields get (about 2:1): a check against it never
        refuses a forecast that would fit."""
        return self.bytes_left(steps) // 2

    def _state_array(self) -> zarr.Array:
        if self._state is None:
            raise RuntimeError(f"{self.path} has no resume-state array: call ensure_state first")
        return self._state

    def _check_index(self, init_idx: int, lead_idx: int, member: int) -> None:
        for what, i, n in (("init", init_idx, len(self.init_times)), ("lead", lead_idx, len(self.leads)),
                           ("member", member, self.members)):
            if not 0 <= i < n:
                raise IndexError(f"{self.path}: {what} index {i} out of range [0, {n})")
