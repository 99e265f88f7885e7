"""Out of space is a user error: one line naming the path and the space, exit code 2, the previous output
intact and no temporary leftovers, and the rerun continues. The failures are real writes under a file-size
limit (RLIMIT_FSIZE, with SIGXFSZ ignored so that a write fails with EFBIG instead of killing the process);
only the checks made before writing are fed a fake free space."""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
from test_errors import _config, _env, _error_lines

from aeris_ds.checkpoint import choose_tag, latest_tag, make_room
from aeris_ds.data.stats import stats_path
from aeris_ds.errors import OutOfSpaceError, human_bytes, run_command
from aeris_ds.outputs import ensure_space

TAG1, TAG2 = "step00000001", "step00000002"
EFBIG = "file larger than the file-size limit (ulimit -f) or the filesystem allows"
SHORT = "the write came up short (a full filesystem or a file-size limit)"  # torch.save loses the errno


def _limited(nbytes: int):
    def apply() -> None:  # in the child, before exec: both survive it
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return apply


def _aeris(args: list[str], limit: int = resource.RLIM_INFINITY) -> subprocess.CompletedProcess:
    """``aeris-ds ARGS`` in a process that cannot write a file larger than ``limit`` bytes."""
    # Without the world of one an in-process run left in the environment (its port may still be taken).
    env = {k: v for k, v in _env().items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR",
                                                          "MASTER_PORT")}
    return subprocess.run([sys.executable, "-m", "aeris_ds.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300, preexec_fn=_limited(limit))


def _one_error(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 2, run.stderr[-3000:]
    lines = _error_lines(run.stderr)
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
    return lines[0]


def _free(n: int):
    """A stand-in for shutil.disk_usage reporting ``n`` bytes free."""
    usage = namedtuple("usage", "total used free")
    return lambda path: usage(2**40, 2**40 - n, n)


@pytest.fixture(scope="module")
def trained(tiny_store, tmp_path_factory) -> tuple[Path, Path]:
    """(config, run folder) of one tiny step: its checkpoint and weights. In-process: the only DeepSpeed
    engine this process makes (a second one would inherit DeepSpeed's groups of the first)."""
    from aeris_ds.train import main

    tmp = tmp_path_factory.mktemp("space")
    config = _config(tmp / "tiny.yaml", tiny_store)
    assert run_command(main, ["--config", str(config), "--out", str(tmp / "run"), "--steps", "1"]) == 0
    return config, tmp / "run"


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def test_checkpoint_out_of_space_keeps_the_previous_one_and_the_rerun_continues(trained, tmp_path):
    config, original = trained
    run = _copy(original, tmp_path / "run")
    ckpt = run / "checkpoints"
    # The largest file of a save (the optimizer states) cannot be written; every other file of the run can.
    sizes = sorted(p.stat().st_size for p in (ckpt / TAG1).iterdir())
    failed = _aeris(["train", "--config", str(config), "--out", str(run), "--steps", "2"],
                    limit=(sizes[-1] + sizes[-2]) // 2)
    line = _one_error(failed)
    assert line.startswith(f"error: out of space writing {ckpt / TAG2}: {SHORT}, "), line
    assert line.endswith(f"free there; free some space and rerun the same command: training resumes from {TAG1}")
    # The previous checkpoint is in charge; the partial tag and every temporary file are gone.
    assert latest_tag(ckpt) == TAG1 and choose_tag(ckpt) == TAG1
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(p.name for p in (original / "checkpoints").iterdir())
    assert sorted(p.name for p in (ckpt / TAG1).iterdir()) == sorted(p.name for p in
                                                                    (original / "checkpoints" / TAG1).iterdir())

    resumed = _aeris(["train", "--config", str(config), "--out", str(run), "--steps", "2"])  # space freed
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert latest_tag(ckpt) == TAG2 and choose_tag(ckpt) == TAG2


def test_checkpoint_that_would_not_fit_is_refused_before_writing(trained, tmp_path, monkeypatch):
    _, original = trained
    ckpt = _copy(original / "checkpoints", tmp_path / "checkpoints")
    previous = sum(json.loads((ckpt / TAG1 / "COMPLETE").read_text())["files"].values())
    (ckpt / "step00000005").mkdir()  # left incomplete by a killed save: removed before the check
    monkeypatch.setattr(shutil, "disk_usage", _free(previous - 1))
    with pytest.raises(OutOfSpaceError) as raised:
        make_room(ckpt, TAG2, lower_bound=1)  # the previous checkpoint's size counts, not the bound
    assert str(raised.value) == (
        f"not enough space for checkpoint {ckpt / TAG2}: needs {human_bytes(previous)}, "
        f"{human_bytes(previous - 1)} free there; free some space and rerun the same command: "
        f"training resumes from {TAG1}")
    assert raised.value.every_rank  # every rank raises it: printed once
    assert sorted(p.name for p in ckpt.glob("step*")) == [TAG1]
    monkeypatch.setattr(shutil, "disk_usage", _free(previous))
    assert make_room(ckpt, TAG2, lower_bound=1) == f"training resumes from {TAG1}"
    shutil.rmtree(ckpt / TAG1)  # the first save: the lower bound from the parameters counts
    with pytest.raises(OutOfSpaceError, match=f"needs 2.0 MiB, {human_bytes(previous)} free there.*starts over"):
        make_room(ckpt, TAG1, lower_bound=2**21)


def test_weights_out_of_space_keep_the_previous_file(trained, tmp_path):
    config, original = trained
    run = _copy(original, tmp_path / "run")
    before = (run / "weights.pt").read_bytes()
    # Trained to step 1 already: the rerun only writes the weights again, and they do not fit.
    failed = _aeris(["train", "--config", str(config), "--out", str(run), "--steps", "1"], limit=len(before) // 2)
    line = _one_error(failed)
    assert line.startswith(f"error: out of space writing {run / 'weights.pt'}: {SHORT}, "), line
    assert line.endswith("training resumes from its last checkpoint and writes them again")
    assert (run / "weights.pt").read_bytes() == before
    # No temporary sibling left; the traceback went to the run's error.log.
    assert sorted(p.name for p in run.iterdir()) == sorted([*(p.name for p in original.iterdir()), "error.log"])


def test_forecast_store_out_of_space_leaves_no_store(trained, tiny_store, tmp_path):
    _, run = trained
    out = tmp_path / "fc" / "forecast.zarr"
    failed = _aeris(["forecast", "--weights", str(run / "weights.pt"), "--store", str(tiny_store),
                     "--init-times", "test:1", "--members", "1", "--lead", "12h", "--out", str(out)], limit=1000)
    line = _one_error(failed)
    assert line.startswith(f"error: out of space writing {out}: {EFBIG}, "), line
    assert [p.name for p in out.parent.iterdir()] == ["error.log"]  # neither the store nor its temporary sibling


def test_forecast_that_would_not_fit_is_refused_before_writing(trained, tiny_store, tmp_path, monkeypatch, capsys):
    from aeris_ds.forecast.driver import main

    _, run = trained
    out = tmp_path / "forecast.zarr"
    monkeypatch.setattr(shutil, "disk_usage", _free(10_000))  # the sums are test_forecast_store_counts_…'s
    assert run_command(main, ["--weights", str(run / "weights.pt"), "--store", str(tiny_store), "--init-times",
                              "test:2", "--members", "3", "--lead", "12h", "--out", str(out)]) == 2
    err = _error_lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith(f"error: not enough space for forecast {out}: needs "), err
    assert err[0].endswith("KiB, 9.8 KiB free there; free some space and rerun the same command"), err
    assert [p.name for p in tmp_path.iterdir()] == ["error.log"]  # its traceback, and no store


def test_forecast_store_counts_the_bytes_it_still_writes(tmp_path):
    from aeris_ds.forecast.store import ForecastStore

    lat, lon = np.linspace(-80, 80, 4), np.arange(0, 360, 45.0)
    store = ForecastStore.create(tmp_path / "f.zarr", np.array(["2001-01-01", "2001-01-02"], "datetime64[ns]"),
                                 np.array([6, 12, 18], "timedelta64[h]"), 2,
                                 {"temperature": [500, 850], "2m_temperature": None}, lat, lon)
    slab = 4 * (2 + 1) * 4 * 8  # float32, three fields of 4 × 8
    assert store.bytes_left(3) == 2 * 3 * 2 * slab
    store.ensure_state((4, 8), "float32")
    store.mark_complete(0, 1, 2)
    rows_left = 4  # each has 2 slots of a 4 × 8 float32 state
    assert store.bytes_left(3) == (2 * 3 * 2 - 2) * slab + rows_left * 2 * 4 * 4 * 8
    store.mark_complete(0, 1, 3)
    assert store.bytes_left(3) == (2 * 3 * 2 - 3) * slab + (rows_left - 1) * 2 * 4 * 4 * 8


def test_stats_out_of_space_keep_the_previous_stats(tiny_store, tmp_path):
    store = tmp_path / "tiny.zarr"
    shutil.copytree(tiny_store, store)
    shutil.copy(stats_path(tiny_store), stats_path(store))
    before = stats_path(store).read_text()
    failed = _aeris(["data", "stats", "--store", str(store), "--config", "tiny", "--overwrite"], limit=100)
    line = _one_error(failed)
    assert line.startswith(f"error: out of space writing {stats_path(store)}: {EFBIG}, "), line
    assert stats_path(store).read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.stats.json", "tiny.zarr"]


def test_space_check_arithmetic(tmp_path):
    ensure_space(tmp_path / "x", 2**30, "checkpoint", free=2**30)  # exactly enough
    with pytest.raises(OutOfSpaceError) as raised:
        ensure_space(tmp_path / "x", 2**30 + 1, "checkpoint", "it resumes", free=2**29)
    assert str(raised.value) == (f"not enough space for checkpoint {tmp_path / 'x'}: needs 1.0 GiB, 512.0 MiB free "
                                 "there; free some space and rerun the same command: it resumes")
    assert isinstance(raised.value, OSError) and list(tmp_path.iterdir()) == []
