"""Every argument of every command is checked at the door: its worst values end in one line ``error: …`` naming
the argument (or the file and key), exit code 2, no traceback, before any work starts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from aeris_ds import launch
from aeris_ds.cli import dispatch
from aeris_ds.errors import run_command

MISSING = "no/such/path"
BIN = Path(sys.executable).parent

# (command line, what its one error line must contain). {NAME}: a path from the `paths` fixture;
# `launch` runs python -m aeris_ds.launch, everything else the aeris-ds entry point.
FC = ["forecast", "--weights", "{W24}", "--store", "{STORE}", "--out", "{OUT}/fc.zarr"]
EV = ["evaluate", "{STORE}", "--truth", "{STORE}", "--out", "{OUT}/scores"]
HS = ["data", "heldsuarez", "--out", "{OUT}/hs.zarr"]
TRAIN = ["train", "--config", "tiny", "--out", "{OUT}/run"]
PLAN = ["plan", "--model", "tiny", "--nodes", "1"]
LAUNCH = ["launch", "local", "--nproc", "2", "--layout", "wp=2", "--config", "small", "--ds-config",
          "ds_configs/zero1_fp32.json", "--dry-run"]
CASES = [
    # the entry point
    (["trian"], "unknown command 'trian'"),
    (["data"], "a data command is needed"),
    (["data", "bogus"], "unknown data command 'bogus'"),
    # info
    (["info", "--config", "nano"], "argument --config: config 'nano' not found"),
    (["info", "--config", "{FILE}.yaml"], "argument --config:"),
    (["info", "--layout", "xp=2"], "argument --layout: bad layout item 'xp=2'"),
    (["info", "--layout", "dp=0"], "argument --layout: bad layout item 'dp=0'"),
    (["info", "--layout", "dp=-1"], "argument --layout:"),
    (["info", "--layout", "dp=two,pp"], "argument --layout:"),
    (["info", "--config", "tiny", "--layout", "sp=3"], "SP=3"),
    (["info", "--bogus", "1"], "unrecognized arguments: --bogus"),
    # data stats / verify / heldsuarez
    (["data", "stats"], "the following arguments are required: --store"),
    (["data", "stats", "--store", MISSING], f"argument --store: {MISSING} does not exist"),
    (["data", "stats", "--store", "{STORE}", "--config", "nano"], "argument --config:"),
    (["data", "verify", MISSING], "argument store:"),
    (["data", "verify"], "required: store"),
    ([*HS, "--years-train", "-1"], "argument --years-train: must be ≥ 0, got -1"),
    ([*HS, "--years-valid", "nan"], "argument --years-valid: expected a finite number"),
    ([*HS, "--years-test", "many"], "argument --years-test:"),
    ([*HS, "--years-train", "0", "--years-valid", "0", "--years-test", "0"], "--years-train"),
    ([*HS, "--chunk-days", "0"], "argument --chunk-days: must be ≥ 1, got 0"),
    ([*HS, "--spinup-days", "-5"], "argument --spinup-days:"),
    ([*HS, "--seed", "-1"], "argument --seed:"),
    ([*HS, "--resolution", "T7"], "argument --resolution: invalid choice: 'T7'"),
    (["data", "heldsuarez", "--out", "{FILE}/hs.zarr"], "argument --out:"),
    (["data", "heldsuarez"], "required: --out"),
    # ingest / rechunk
    (["ingest", MISSING, "--out", "{OUT}/era5.zarr"], "argument inputs:"),
    (["ingest", "{FILE}", "{FILE}", MISSING, "--out", "{OUT}/era5.zarr"], f"argument inputs: {MISSING}"),
    (["ingest", "{FILE}", "--out", "{FILE}/era5.zarr"], "argument --out:"),
    (["ingest", "{FILE}", "--out", "{OUT}/era5.zarr", "--workers", "0"], "argument --workers: must be ≥ 1, got 0"),
    (["ingest", "{FILE}", "--out", "{OUT}/era5.zarr", "--member", "-1"], "argument --member:"),
    (["ingest", "{FILE}", "--out", "{OUT}/era5.zarr", "--times-per-shard", "0"], "argument --times-per-shard:"),
    (["ingest", "{FILE}"], "required: --out"),
    (["rechunk", MISSING, "{OUT}/r.zarr"], "argument src:"),
    (["rechunk", "{STORE}", "{FILE}/r.zarr"], "argument dst:"),
    (["rechunk", "{STORE}", "{OUT}/r.zarr", "--memory-mb", "0"], "argument --memory-mb: must be > 0, got 0"),
    (["rechunk", "{STORE}", "{OUT}/r.zarr", "--memory-mb", "inf"], "argument --memory-mb:"),
    (["rechunk", "{STORE}", "{OUT}/r.zarr", "--config", "nano"], "argument --config:"),
    # train: arguments, then the DeepSpeed JSON (file, key and what is allowed)
    ([*TRAIN, "--steps", "0"], "argument --steps: must be ≥ 1, got 0"),
    ([*TRAIN, "--steps", "-3"], "argument --steps:"),
    ([*TRAIN, "--steps", "1.5"], "argument --steps: expected an integer ≥ 1, got '1.5'"),
    ([*TRAIN, "--max-minutes", "0"], "argument --max-minutes:"),
    ([*TRAIN, "--max-minutes", "-inf"], "argument --max-minutes:"),
    ([*TRAIN, "--layout", "dp=2,pp"], "argument --layout:"),
    ([*TRAIN, "--store", MISSING], "argument --store:"),
    ([*TRAIN, "--init-weights", MISSING], "argument --init-weights:"),
    ([*TRAIN, "--resume-from", MISSING], "argument --resume-from:"),
    ([*TRAIN, "--deepspeed_config", MISSING], "argument --deepspeed_config:"),
    ([*TRAIN, "--local_rank", "-1"], "argument --local_rank:"),
    (["train", "--config", "nano"], "argument --config:"),
    (["train", "--out", "{FILE}/run"], "argument --out: {FILE}/run cannot be created"),
    ([*TRAIN, "--deepspeed_config", "{DS_STAGE}"],
     "{DS_STAGE}: zero_optimization.stage: Input should be 0, 1, 2 or 3 (got 7)"),
    ([*TRAIN, "--deepspeed_config", "{DS_TYPO}"], "zero_optimisation: unknown key (did you mean zero_optimization?)"),
    ([*TRAIN, "--deepspeed_config", "{DS_BATCH}"], "train_batch_size: 6 is not a multiple"),
    ([*TRAIN, "--deepspeed_config", "{DS_MICRO}"], "train_micro_batch_size_per_gpu: Input should be greater than 0"),
    ([*TRAIN, "--deepspeed_config", "{DS_KEY}"], "zero_optimization.stagee: unknown key (did you mean stage?)"),
    ([*TRAIN, "--deepspeed_config", "{DS_BF16}"], "bf16.enabled: Input should be a valid boolean"),
    ([*TRAIN, "--deepspeed_config", "{DS_NOTJSON}"], "not valid JSON"),
    # forecast
    ([*FC, "--members", "0"], "argument --members: must be ≥ 1, got 0"),
    ([*FC, "--members", "-2"], "argument --members:"),
    ([*FC, "--members", "eight"], "argument --members: expected an integer ≥ 1, got 'eight'"),
    ([*FC, "--lead", "0h"], "argument --lead:"),
    ([*FC, "--lead", "-6h"], "argument --lead:"),
    ([*FC, "--lead", "10 days"], "argument --lead:"),
    ([*FC, "--lead", "7h"], "argument --lead: 7h is not a multiple of the model step 24 h"),
    ([*FC, "--init-times", "test:0"], "argument --init-times: test:N needs N ≥ 1"),
    ([*FC, "--init-times", "tomorrow"], "argument --init-times:"),
    ([*FC, "--init-times", "2020-13-45T00"], "argument --init-times:"),
    ([*FC, "--init-times", ""], "argument --init-times:"),
    ([*FC, "--batch", "0"], "argument --batch: must be ≥ 1, got 0"),
    ([*FC, "--seed", "-1"], "argument --seed:"),
    ([*FC, "--sampler", "steps=0"], "argument --sampler: steps=0"),
    ([*FC, "--sampler", "bogus=1"], "argument --sampler: bad item 'bogus=1'"),
    ([*FC, "--sampler", "steps"], "argument --sampler:"),
    ([*FC, "--sampler", "sigma_min=9,sigma_max=1"], "--sampler"),
    ([*FC, "--consistency-steps", "3"], "argument --consistency-steps: invalid choice"),
    ([*FC, "--sampler", "steps=2", "--consistency-steps", "1"], "not allowed with argument --sampler"),
    ([*FC, "--weights", MISSING], "argument --weights:"),
    ([*FC, "--store", MISSING], "argument --store:"),
    ([*FC, "--out", "{FILE}/fc.zarr"], "argument --out:"),
    (["forecast", "--store", "{STORE}"], "required: --weights"),
    (["forecast", "--weights", "{W24}"], "argument --store: data/heldsuarez.zarr does not exist"),
    # evaluate
    (["evaluate", MISSING, "--truth", "{STORE}"], "argument forecast:"),
    (["evaluate", "{STORE}", "--truth", MISSING], "argument --truth:"),
    ([*EV, "--climatology", MISSING], "argument --climatology:"),
    ([*EV, "--climatology-from", "2000-01-01"], "argument --climatology-from: expected START/END"),
    ([*EV, "--climatology-from", "then/now"], "argument --climatology-from:"),
    ([*EV, "--climatology-from", "2001-01-01/2000-01-01"], "argument --climatology-from: START is after END"),
    ([*EV, "--climatology-window-days", "-1"], "argument --climatology-window-days:"),
    ([*EV, "--climatology-window-days", "400"], "argument --climatology-window-days: must be ≤ 183"),
    ([*EV, "--resamples", "0"], "argument --resamples:"),
    ([*EV, "--levels", "500", "0"], "argument --levels:"),
    ([*EV, "--levels", "z500"], "argument --levels:"),
    ([*EV, "--weighting", "flat"], "argument --weighting: invalid choice"),
    ([*EV, "--plots", "some"], "argument --plots: invalid choice"),
    (["evaluate", "{STORE}", "--truth", "{STORE}", "--out", "{FILE}/scores"], "argument --out:"),
    (["evaluate", "{STORE}"], "required: --truth"),
    # plan
    ([*PLAN[:-1], "0"], "argument --nodes: must be ≥ 1, got 0"),
    ([*PLAN[:-1], "x"], "argument --nodes:"),
    (["plan", "--model", "nano", "--nodes", "1"], "argument --model: config 'nano' not found"),
    ([*PLAN, "--machine", "summit"], "argument --machine: invalid choice"),
    ([*PLAN, "--global-batch", "0"], "argument --global-batch:"),
    ([*PLAN, "--global-batch", "7"], "global batch 7"),
    ([*PLAN, "--top", "-1"], "argument --top:"),
    (["plan", "--nodes", "1"], "required: --model"),
    # demo: its model step and layout are checked once the config is loaded, before the first stage
    (["demo", "--nproc", "0"], "argument --nproc: must be ≥ 1, got 0"),
    (["demo", "--nproc", "3"], "argument --nproc: 3 ranks, but the layout of small"),
    (["demo", "--lead", "7h"], "argument --lead: 7h is not a multiple of the model step 24 h of small"),
    (["demo", "--lead", "0d"], "argument --lead:"),
    (["demo", "--minutes", "0"], "argument --minutes:"),
    (["demo", "--members", "0"], "argument --members:"),
    (["demo", "--init-times", "test:x"], "argument --init-times:"),
    (["demo", "--batch", "-1"], "argument --batch:"),
    (["demo", "--sampler", "churn=-1"], "argument --sampler: churn=-1"),
    (["demo", "--config", "nano"], "argument --config:"),
    (["demo", "--run", "{FILE}/demo"], "argument --run:"),
    (["demo", "--launcher", "mpirun"], "argument --launcher: invalid choice"),
    # checkpoint
    (["checkpoint", "convert", MISSING], "argument path:"),
    (["checkpoint", "merge", "x"], "invalid choice: 'merge'"),
    (["checkpoint"], "required: command"),
    # the launchers' validation (python -m aeris_ds.launch)
    ([*LAUNCH, "--nodes", "0"], "argument --nodes:"),
    ([*LAUNCH, "--nproc", "-2"], "argument --nproc:"),
    ([*LAUNCH, "--master-port", "70000"], "argument --master-port: must be ≤ 65535"),
    ([*LAUNCH, "--layout", "wp=x"], "argument --layout:"),
    ([*LAUNCH, "--config", "nano"], "argument --config:"),
    ([*LAUNCH, "--ds-config", MISSING], "argument --ds-config:"),
    ([*LAUNCH, "--nproc", "3"], "needs dp·pp·wp·sp = 2 ranks"),
    (["launch", "summit", "--layout", "wp=2", "--config", "small", "--ds-config", "x"], "argument target:"),
]

DS_CASES = {
    "DS_STAGE": {"zero_optimization": {"stage": 7}},
    "DS_TYPO": {"zero_optimisation": {"stage": 1}},
    "DS_BATCH": {"train_batch_size": 6},
    "DS_MICRO": {"train_micro_batch_size_per_gpu": 0},
    "DS_KEY": {"zero_optimization": {"stagee": 1}},
    "DS_BF16": {"bf16": {"enabled": "maybe"}},
}


def weights_of_a_24h_model(path: Path) -> Path:
    """A weights file whose model steps 24 h (its parameters are not needed to refuse a lead)."""
    from aeris_ds.config import load_config
    from aeris_ds.weights import save_weights

    cfg = load_config("tiny", {"data": {"lead_hours": 24}})
    return save_weights({"params": {}, "ema": {}}, path, {"config": cfg.model_dump(mode="json"), "step": 0})


def bad_ds_configs(folder: Path) -> dict[str, str]:
    """The repository's zero1_fp32.json with one bad key or value each (DS_CASES), and one that is not JSON."""
    from aeris_ds.config import REPO_ROOT

    base = json.loads((REPO_ROOT / "ds_configs" / "zero1_fp32.json").read_text())
    out = {}
    for name, change in DS_CASES.items():
        path = folder / f"{name.lower()}.json"
        path.write_text(json.dumps({**base, **change}))
        out[name] = str(path)
    (folder / "notjson.json").write_text('{"train_micro_batch_size_per_gpu": 4,')
    out["DS_NOTJSON"] = str(folder / "notjson.json")
    return out


@pytest.fixture(scope="module")
def paths(tiny_store, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("args")
    (root / "file.txt").write_text("")
    (root / "out").mkdir()
    return {"STORE": str(tiny_store), "FILE": str(root / "file.txt"), "OUT": str(root / "out"),
            "W24": str(weights_of_a_24h_model(root / "w24.pt")), **bad_ds_configs(root)}


@pytest.fixture(autouse=True)
def _no_error_log(monkeypatch):
    from aeris_ds import errors

    monkeypatch.setattr(errors, "_log", None)  # a command that fails after log_to() must not log for the next


def run(argv: list[str]) -> int:
    if argv[0] == "launch":
        return run_command(launch.main, argv[1:])
    return run_command(dispatch, argv)


def one_error_line(code: int, err: str) -> str:
    """The single ``error: …`` line of a refused command (exit code 2, no traceback)."""
    lines = err.splitlines()
    assert code == 2, err
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("argv,named", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_worst_value_is_one_line_naming_the_argument(argv, named, paths, capsys, monkeypatch):
    monkeypatch.chdir(paths["OUT"])  # relative defaults (data/heldsuarez.zarr) must not exist
    argv = [a.format(**paths) for a in argv]
    line = one_error_line(run(argv), capsys.readouterr().err)
    assert named.format(**paths) in line, line


def test_help_still_prints_and_exits_0(capsys):
    for argv in (["forecast", "--help"], ["data", "stats", "-h"], ["checkpoint", "convert", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            dispatch(argv)
        assert exit_info.value.code == 0
        out = capsys.readouterr()
        assert out.out.startswith("usage: aeris-ds") and out.err == ""


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}


def test_forecast_members_zero_exits_2_in_a_real_process(paths):
    """The bug report: `aeris-ds forecast --members 0` was a ValueError from the store, with a traceback."""
    res = subprocess.run([sys.executable, "-m", "aeris_ds.cli", "forecast", "--weights", paths["W24"], "--store",
                          paths["STORE"], "--members", "0"], capture_output=True, text=True, env=_env(), timeout=300)
    assert res.returncode == 2 and res.stderr == "error: argument --members: must be ≥ 1, got 0\n", res.stderr


def test_bad_ds_config_is_one_line_once_under_torchrun(paths, tmp_path):
    """The bug report: stage 7 gave DeepSpeed's pydantic dump on every rank and exit code 1."""
    res = subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "aeris_ds.train",
                          "--config", "tiny", "--layout", "dp=2", "--out", str(tmp_path / "run"),
                          "--deepspeed_config", paths["DS_STAGE"]],
                         capture_output=True, text=True, env=_env(), timeout=300)
    text = res.stdout + res.stderr
    assert [line for line in text.splitlines() if re.match(r"(\[rank \d+\] )?error: ", line)] == [
        f"error: {paths['DS_STAGE']}: zero_optimization.stage: Input should be 0, 1, 2 or 3 (got 7)"], text[-3000:]
    assert "exitcode  : 2" in text and "validation error" not in text
    assert not re.search(r'File ".*aeris_ds', text), "no traceback of ours on the console"
