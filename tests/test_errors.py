"""User errors end in one line ``error: <cause naming the file/setting>``, once per job, exit code 2;
the traceback goes to the run folder's error.log (and to the console with --debug)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
import zarr

from aeris_ds.config import load_config
from aeris_ds.data.stats import stats_path
from aeris_ds.errors import run_command

BIN = Path(sys.executable).parent


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}


def _config(path: Path, store: Path, **train) -> Path:
    cfg = load_config("tiny", {"data": {"store": str(store)}, "train": train})
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


def _copy_store(store: Path, to: Path, stats: bool = True) -> Path:
    shutil.copytree(store, to)
    if stats:
        shutil.copy(stats_path(store), stats_path(to))
    return to


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(r"(\[rank \d+\] )?error: ", line)]


def test_damaged_weights_are_one_line_and_the_traceback_goes_to_the_run_folder(tmp_path, tiny_store, capsys,
                                                                               monkeypatch):
    from aeris_ds import errors
    from aeris_ds.forecast.driver import main

    monkeypatch.setattr(errors, "_log", None)  # restored after the test
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"not a torch file")
    out = tmp_path / "run" / "forecast.zarr"
    code = run_command(main, ["--weights", str(weights), "--store", str(tiny_store), "--lead", "6h", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(f"error: weights file {weights} is damaged"), err
    assert "Traceback" in (tmp_path / "run" / "error.log").read_text() and not out.exists()


def test_data_help_prints_help_and_succeeds(capsys):
    from aeris_ds.cli import main

    main(["data", "--help"])  # returns: exit code 0
    out = capsys.readouterr().out
    assert "aeris-ds data heldsuarez --out PATH" in out and "aeris-ds data stats --store PATH" in out


def test_unwritable_checkpoints_folder_fails_before_training(tmp_path, tiny_store, capsys):
    from aeris_ds.train import main

    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")  # the run folder cannot be created under a file, as on a read-only mount
    out = blocker / "run"  # in the YAML: as --out it is refused at the door (test_args)
    code = run_command(main, ["--config", str(_config(tmp_path / "tiny.yaml", tiny_store, out_dir=str(out)))])
    assert code == 2
    err = capsys.readouterr().err
    assert _error_lines(err) == [f"error: checkpoints folder {out / 'checkpoints'} is not writable: "
                                 "Not a directory (choose another run folder with --out)"], err


def test_non_finite_loss_names_the_step_and_the_samples_times(tmp_path, tiny_store):
    """A huge (finite) value at one time of the store: the error names the step that read it and the time."""
    store = _copy_store(tiny_store, tmp_path / "huge.zarr")
    cfg = load_config("tiny")
    n, global_batch = 48 - 1, 4  # train split: 48 six-hourly times, lead one step; micro 4, one rank
    order = np.random.default_rng([cfg.train.seed, 0, 7]).permutation(n)
    # A time read by a sample of step 3 (as its initial state) and by none of steps 1–2 (the sample before
    # it reads the same time as its target).
    bad = next(int(t) for t in order[2 * global_batch:3 * global_batch] if t - 1 not in order[:2 * global_batch])
    zarr.open_group(store, mode="r+")["mean_sea_level_pressure"][bad, 3, 5] = 1e30
    step = 3
    samples = order[(step - 1) * global_batch:step * global_batch]
    times = np.datetime64("2000-01-01T00") + samples * np.timedelta64(6, "h")

    config = _config(tmp_path / "tiny.yaml", store)
    run = subprocess.run([sys.executable, "-m", "aeris_ds.train", "--config", str(config), "--out",
                          str(tmp_path / "run"), "--steps", "4"], env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 2, run.stderr[-3000:]
    listed = ", ".join(f"{s} ({np.datetime_as_string(t, unit='m')})" for s, t in zip(samples, times, strict=True))
    assert _error_lines(run.stderr) == [
        f"error: loss is inf at step {step}, which read samples {listed} of {store} (initial times; each target "
        "is 6 h later): stopping before the weights are saved"], run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert "Traceback" in (tmp_path / "run" / "error.log").read_text()


def test_two_ranks_under_torchrun_print_one_error_line(tmp_path, tiny_store):
    """Both ranks fail (the stats are missing); the job prints one line, with the hint for this config."""
    store = _copy_store(tiny_store, tmp_path / "nostats.zarr", stats=False)
    config = _config(tmp_path / "mine.yaml", store)
    out = tmp_path / "run"
    run = subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m",
                          "aeris_ds.train", "--config", str(config), "--layout", "dp=2", "--out", str(out)],
                         env=_env(), capture_output=True, text=True, timeout=300)
    text = run.stdout + run.stderr
    assert run.returncode != 0
    assert _error_lines(text) == [
        f"error: normalization stats {stats_path(store)} missing: run "
        f"`aeris-ds data stats --store {store} --config {config}`"], text[-3000:]
    assert not re.search(r'File ".*aeris_ds', text), "no traceback of ours on the console"
    assert "exitcode  : 2" in text  # torchrun's own report carries the user-error exit code
    assert "MissingPathError" in (out / "error.log").read_text()
