"""Command-line arguments, checked at the door: every command's parser and the types of its values.

Each ``type=`` here turns a string into the value a command uses or raises ArgumentValueError, which argparse
reports as ``argument --members: must be ≥ 1, got 0``. ``ArgumentParser`` turns every parse error into one
ConfigError (``error: …`` and exit code 2 through errors.run_command) instead of argparse's usage block and
exit code; ``--help`` prints the help as before. Checks that need a loaded config or weights (a lead that is
a multiple of the model step) are made right after loading, before any work, by the command.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import numpy as np
from pydantic import ValidationError

from aeris_ds.config import SamplerConfig, config_path, ds_config_path
from aeris_ds.errors import ArgumentValueError, ConfigError, UserError


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line, ``error: <argparse's message>``, exit code 2 (via run_command)."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def _number(text: str, kind: type, low: float, strict: bool) -> float:
    bound = f"{'>' if strict else '≥'} {low:g}"
    try:
        value = kind(text)
    except ValueError:
        raise ArgumentValueError(f"expected {'an integer' if kind is int else 'a number'} {bound}, "
                                 f"got {text!r}") from None
    if not math.isfinite(value):
        raise ArgumentValueError(f"expected a finite number {bound}, got {text!r}")
    if value < low or (strict and value == low):
        raise ArgumentValueError(f"must be {bound}, got {text.strip()}")
    return value


def positive_int(text: str) -> int:
    """A count: ≥ 1."""
    return _number(text, int, 1, False)


def non_negative_int(text: str) -> int:
    """A seed, an index or a number of days: ≥ 0."""
    return _number(text, int, 0, False)


def int_between(low: int, high: int) -> Callable[[str], int]:
    """An integer in [low, high]: a port, a window, a count with a sane ceiling."""

    def bounded(text: str) -> int:
        value = _number(text, int, low, False)
        if value > high:
            raise ArgumentValueError(f"must be ≤ {high}, got {value}")
        return value

    bounded.__name__ = f"int_between_{low}_{high}"
    return bounded


def positive_float(text: str) -> float:
    """A size or a time: finite and > 0."""
    return _number(text, float, 0, True)


def non_negative_float(text: str) -> float:
    return _number(text, float, 0, False)


def parse_duration(text: str) -> np.timedelta64:
    """``90d`` or ``72h`` → a positive number of hours."""
    match = re.fullmatch(r"(\d+)\s*([dh])", text.strip())
    if not match:
        raise ArgumentValueError(f"expected a lead such as 90d or 72h, got {text!r}")
    if int(match[1]) == 0:
        raise ArgumentValueError(f"must be positive, such as 90d or 72h, got {text!r}")
    return np.timedelta64(int(match[1]) * (24 if match[2] == "d" else 1), "h")


def lead_steps(lead: np.timedelta64, step_hours: int, source: str) -> int:
    """Model steps in a lead; a one-line error naming --lead when it is not a whole number of them."""
    step = np.timedelta64(step_hours, "h")
    if lead % step:
        raise ConfigError(f"argument --lead: {lead.astype(int)}h is not a multiple of the model step "
                          f"{step_hours} h of {source}")
    return int(lead // step)


def _datetime(text: str) -> np.datetime64:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy only warns about (and drops) a time zone
        try:
            value = np.datetime64(text.strip())
        except (ValueError, TypeError, Warning):
            value = np.datetime64("NaT")
    if np.isnat(value):
        raise ArgumentValueError(f"expected an ISO time such as 2020-01-01T06, got {text!r}")
    return value


def parse_init_times(text: str) -> tuple[str, int] | list[np.datetime64]:
    """``SPLIT:N`` (N init times spread over a split) → (split, N); else comma-separated ISO times."""
    match = re.fullmatch(r"(\w+):(\d+)", text.strip())
    if match:
        if int(match[2]) < 1:
            raise ArgumentValueError(f"{match[1]}:N needs N ≥ 1, got {text!r}")
        return match[1], int(match[2])
    if not text.strip():
        raise ArgumentValueError("expected SPLIT:N (e.g. test:4) or comma-separated ISO times, got ''")
    try:
        return [_datetime(part) for part in text.split(",")]
    except ArgumentValueError:
        raise ArgumentValueError(f"expected SPLIT:N (e.g. test:4) or comma-separated ISO times such as "
                                 f"2020-01-01T00,2020-01-02T12, got {text!r}") from None


def parse_period(text: str) -> tuple[np.datetime64, np.datetime64]:
    """``START/END`` → two times, START ≤ END."""
    start, sep, end = text.partition("/")
    try:
        if not sep:
            raise ArgumentValueError(text)
        first, last = _datetime(start), _datetime(end)
    except ArgumentValueError:
        raise ArgumentValueError(f"expected START/END such as 1990-01-01/2017-12-31, got {text!r}") from None
    if first > last:
        raise ArgumentValueError(f"START is after END in {text!r}")
    return first, last


def parse_sampler(text: str) -> dict[str, str]:
    """``steps=5,churn=1`` → sampler overrides, each value checked alone (the whole sampler is checked once the
    weights' saved settings are merged in)."""
    items: dict[str, str] = {}
    for part in filter(None, text.split(",")):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in SamplerConfig.model_fields:
            raise ArgumentValueError(f"bad item {part!r}: expected KEY=VALUE with KEY one of "
                                     f"{', '.join(SamplerConfig.model_fields)}")
        items[key.strip()] = value.strip()
    try:
        SamplerConfig(**items)
    except ValidationError as err:
        fields = [e for e in err.errors() if e["loc"]]  # errors across fields wait for the saved settings
        if fields:
            e = fields[0]
            raise ArgumentValueError(f"{e['loc'][0]}={items[e['loc'][0]]}: {e['msg']}") from None
    return items


def _spec(parse: Callable[[str], object]) -> Callable[[str], str]:
    """A ``type=`` for a spec passed on as text (to run_forecast, to the demo's forecast stage), checked by the
    same function its consumer parses it with."""

    def check(text: str) -> str:
        parse(text)
        return text

    check.__name__ = parse.__name__.removeprefix("parse_")
    return check


lead = _spec(parse_duration)
init_times = _spec(parse_init_times)
period = _spec(parse_period)
sampler = _spec(parse_sampler)


def existing_path(text: str) -> str:
    """A file or folder the command reads."""
    if not text or not Path(text).exists():
        raise ArgumentValueError(f"{text or repr(text)} does not exist")
    return text


def output_path(text: str) -> str:
    """A path the command writes: it exists (the command decides whether it may write there) or can be created
    (its nearest existing parent is a writable folder)."""
    if not text:
        raise ArgumentValueError("expected a path, got ''")
    path = Path(text).absolute()
    if not path.exists():
        parent = next(p for p in path.parents if p.exists())
        if not parent.is_dir():
            raise ArgumentValueError(f"{text} cannot be created: {parent} is not a folder")
        if not os.access(parent, os.W_OK):
            raise ArgumentValueError(f"{text} cannot be created: {parent} is not writable")
    return text


def _found(find: Callable[[str], Path]) -> Callable[[str], str]:
    def check(text: str) -> str:
        try:
            find(text)
        except UserError as err:
            raise ArgumentValueError(str(err)) from None
        return text

    check.__name__ = find.__name__
    return check


config_ref = _found(config_path)  # a preset name or a YAML file
ds_config_file = _found(ds_config_path)  # checked in full (DeepSpeed's classes) when it is loaded
