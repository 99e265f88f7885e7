"""User errors and how every command reports them.

A user error (a wrong config, a layout that does not divide, missing or corrupt data, a damaged checkpoint,
an output path that would clobber something, a full disk) is raised as a ``UserError`` subclass whose message names the
cause and the file. Commands run through ``run_command``, which prints it as one line, ``error: <message>``,
once (rank 0, or the rank that failed alone), and exits non-zero. Anything else is a bug and keeps its
traceback. ``--debug`` (or ``AERIS_DEBUG=1``) shows the traceback of user errors too.

The classes also derive from the matching built-in exception, so ``except ValueError`` keeps working.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import sys
import traceback
from collections.abc import Callable
from pathlib import Path


class UserError(Exception):
    """A mistake in the user's input: reported as one line, without a traceback.

    ``every_rank``: every rank of a job meets this error at the same point (a config, a layout, a checkpoint),
    so only rank 0 prints it. Errors that one rank meets alone (its own block of a corrupt store) print on
    that rank.
    """

    every_rank = True

    def __init__(self, *args: object, every_rank: bool | None = None):
        super().__init__(*args)
        if every_rank is not None:
            self.every_rank = every_rank


class ConfigError(UserError, ValueError):
    """The experiment YAML, the DeepSpeed JSON or a command-line setting is wrong."""


class LayoutError(UserError, ValueError):
    """The parallel layout does not fit the world size, the grid or the model."""


class ArgumentValueError(ConfigError, argparse.ArgumentTypeError):
    """A bad value of one command-line argument. As an argparse ``type=`` it makes the line name the argument
    (``argument --members: must be ≥ 1, got 0``); raised anywhere else it is a ConfigError."""


class DataError(UserError, ValueError):
    """A store or file is missing a variable, is corrupt, or holds non-finite values."""

    every_rank = False


class CheckpointError(UserError, ValueError):
    """A checkpoint or weights file is missing, damaged, or for another model."""


class OutputError(UserError, FileExistsError):
    """An output path would overwrite or delete something the command did not create."""


class MissingPathError(UserError, FileNotFoundError):
    """A path the command needs does not exist."""


class OutOfSpaceError(UserError, OSError):
    """A write found its filesystem full (or a quota or file-size limit reached), or would have.

    Raised by the rank that meets it (``every_rank`` False); a checkpoint save agrees across ranks first and
    raises it on every rank, so that rank 0 prints it once.
    """

    every_rank = False
    rerun = ""  # what rerunning the command does, when the writer knows

    def __init__(self, message: str, *, rerun: str = "", every_rank: bool | None = None):
        super().__init__(f"{message}; free some space and rerun the same command" + (f": {rerun}" if rerun else ""),
                         every_rank=every_rank)
        self.cause, self.rerun = message, rerun

    def __reduce__(self):  # pickled whole: _on_rank0 sends it to every rank
        return _rebuild, (self.cause, self.rerun, self.every_rank)

    def explained(self, rerun: str) -> OutOfSpaceError:
        """This error, saying what the rerun does when it does not yet."""
        return self if self.rerun or not rerun else OutOfSpaceError(self.cause, rerun=rerun,
                                                                    every_rank=self.every_rank)


def _rebuild(cause: str, rerun: str, every_rank: bool) -> OutOfSpaceError:
    return OutOfSpaceError(cause, rerun=rerun, every_rank=every_rank)


# errno values meaning "no room": a full device, a quota, a file-size limit (ulimit -f, or the filesystem's)
_NO_ROOM = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
            errno.EFBIG: "file larger than the file-size limit (ulimit -f) or the filesystem allows"}
# torch.save's C++ writer loses the errno: what it says when a write came up short (which one depends on
# where the stream failed)
_TORCH_SHORT_WRITE = ("unexpected pos", "PytorchStreamWriter failed", "file write failed", "basic_ios::clear")


def _no_room(err: BaseException) -> str | None:
    """Why ``err`` (or an error it was raised from or during) is a full filesystem, or None when it is not."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _NO_ROOM:
            return _NO_ROOM[err.errno]
        err = err.__cause__ or err.__context__
    return None


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def free_bytes(path: str | os.PathLike) -> int:
    """Free bytes on the filesystem that holds ``path`` (or would: its nearest existing folder)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def out_of_space(err: BaseException, path: str | os.PathLike | None = None, rerun: str = "") -> OutOfSpaceError | None:
    """``err`` as the one-line OutOfSpaceError naming ``path`` and the space left there, or None when ``err`` is
    not a failure for want of space. ``rerun``: what rerunning the command does, e.g. "it continues from …"."""
    if isinstance(err, OutOfSpaceError):
        return err.explained(rerun)
    reason = _no_room(err)
    if reason is None and isinstance(err, RuntimeError) and any(s in str(err) for s in _TORCH_SHORT_WRITE):
        reason = "the write came up short (a full filesystem or a file-size limit)"
    if reason is None:
        return None
    if path is None and isinstance(err, OSError) and err.filename:
        path = err.filename
    where = f"writing {path}" if path is not None else "while writing"
    try:
        left = f", {human_bytes(free_bytes(path))} free there" if path is not None else ""
    except OSError:
        left = ""
    return OutOfSpaceError(f"out of space {where}: {reason}{left}", rerun=rerun)


EXIT_USER_ERROR = 2  # launchers (torchrun, deepspeed) report it as the child's exit code


def debug_requested(argv: list[str]) -> tuple[bool, list[str]]:
    """(debug?, argv without ``--debug``): the flag is accepted by every command."""
    debug = "--debug" in argv or os.environ.get("AERIS_DEBUG", "") not in ("", "0")
    return debug, [a for a in argv if a != "--debug"]


def _rank() -> int:
    for var in ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


_log: Path | None = None


def log_to(path: str | Path) -> None:
    """Send the tracebacks of this process's failures to ``path`` (a command's run folder knows where)."""
    global _log
    _log = Path(path)


def _write_log(err: BaseException) -> Path | None:
    if _log is None:
        return None
    try:
        _log.parent.mkdir(parents=True, exist_ok=True)
        with open(_log, "a") as f:
            f.write(f"--- rank {_rank()}, pid {os.getpid()}\n")
            traceback.print_exception(err, file=f)
    except OSError:
        return None
    return _log


def report(err: BaseException) -> None:
    """Print ``error: …`` once per job; its traceback goes to the log file when one is set."""
    every_rank = getattr(err, "every_rank", True)
    if _rank() == 0 or not every_rank:
        _write_log(err)
        prefix = "" if _rank() == 0 else f"[rank {_rank()}] "
        # One line whatever the message holds (a library's multi-line text quoted in it)
        message = " ".join(str(err).strip().splitlines()) or type(err).__name__
        print(f"{prefix}error: {message}", file=sys.stderr, flush=True)


def run_command(main: Callable[[list[str]], object], argv: list[str] | None = None) -> int:
    """Run a command's ``main(argv)``: user errors become one line and exit code 2, Ctrl-C exit code 130."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug, argv = debug_requested(argv)
    try:
        result = main(argv)
    except UserError as err:
        if debug:
            raise
        report(err)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        if debug:
            raise
        if _rank() == 0:
            print("interrupted: outputs that were not complete were left as temporary files or not written",
                  file=sys.stderr, flush=True)
        return 130
    except Exception as err:  # a bug: its traceback stays on the console, and goes to the log too
        failure = None if debug else out_of_space(err)  # a write no writer translated: still a full disk
        if failure is not None:
            _write_log(err)
            report(failure)
            return EXIT_USER_ERROR
        _write_log(err)
        raise
    return int(result) if isinstance(result, int) else 0
