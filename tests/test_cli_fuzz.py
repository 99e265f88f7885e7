"""Fuzzing the command line: random mutations of valid command lines, experiment YAMLs and DeepSpeed JSONs end
in exit code 0 or in one line ``error: …`` with exit code 2, never in a traceback.

Only lines that stay cheap are fuzzed: commands whose valid lines take milliseconds (info, plan, data stats and
verify, rechunk on a tiny store, the launchers' --dry-run), and commands given inputs they refuse after their
checks (forecast with weights that hold no parameters, evaluate of a store that is not a forecast, ingest of a
text file, checkpoint convert of a folder without checkpoints). The command word itself is never mutated, so
no mutation can start training or the demo. Hypothesis runs derandomized: the same examples on every run.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aeris_ds import errors, launch
from aeris_ds.cli import dispatch
from aeris_ds.config import REPO_ROOT, load_config
from aeris_ds.data.stats import stats_path

FUZZ = settings(deadline=None, database=None, derandomize=True, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def world(tiny_store, tmp_path_factory):
    """Inputs in a scratch folder that is also the working directory (relative outputs land there), and
    DRY_RUN=1 so that no launcher line, however mutated, execs anything."""
    root = tmp_path_factory.mktemp("fuzz")
    store = root / "store.zarr"  # a copy: data stats may rewrite its statistics
    shutil.copytree(tiny_store, store)
    shutil.copy(stats_path(tiny_store), stats_path(store))
    (root / "notes.txt").write_text("not a GRIB file")
    (root / "folder").mkdir()
    from test_args import weights_of_a_24h_model

    paths = {"STORE": str(store), "FILE": str(root / "notes.txt"), "DIR": str(root / "folder"),
             "W24": str(weights_of_a_24h_model(root / "w24.pt")), "OUT": str(root / "out.zarr"),
             "UNDER_FILE": str(root / "notes.txt" / "x"), "MISSING": str(root / "missing"),
             "DS": str(REPO_ROOT / "ds_configs" / "zero1_fp32.json"), "ROOT": str(root)}
    cwd, dry = os.getcwd(), os.environ.get("DRY_RUN")
    os.chdir(root)
    os.environ["DRY_RUN"] = "1"
    yield paths
    os.chdir(cwd)
    if dry is None:
        del os.environ["DRY_RUN"]
    else:
        os.environ["DRY_RUN"] = dry


def run_line(argv: list[str]) -> tuple[int, str]:
    """(exit code, stderr) of one command line, in-process; --help's SystemExit is its exit code."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            if argv[0] == "launch":
                code = errors.run_command(launch.main, argv[1:])
            else:
                code = errors.run_command(dispatch, argv)
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 2
    finally:
        errors._log = None  # forecast points error.log at its run folder; the next line must not write there
    return code, err.getvalue()


def assert_clean(argv: list[str], code: int, err: str) -> None:
    assert "Traceback" not in err, (argv, err)
    assert code in (0, 2), (argv, code, err)
    if code == 2:  # progress bars may come before it on stderr; the error is the one last line
        lines = err.rstrip("\n").splitlines()
        assert lines and lines[-1].startswith("error: "), (argv, err)
        assert sum(line.startswith("error: ") for line in lines) == 1, (argv, err)


# Valid lines (or lines refused only after the parser) and how many leading words are the command.
LINES = {
    "info": (1, ["info", "--config", "tiny", "--layout", "wp=2"]),
    "plan": (1, ["plan", "--model", "tiny", "--nodes", "2", "--machine", "h100", "--global-batch", "8",
                 "--top", "2"]),
    "stats": (2, ["data", "stats", "--store", "{STORE}", "--config", "tiny", "--overwrite"]),
    "verify": (2, ["data", "verify", "{STORE}", "--no-progress"]),
    "rechunk": (1, ["rechunk", "{STORE}", "{OUT}", "--config", "tiny", "--memory-mb", "1"]),
    "convert": (1, ["checkpoint", "convert", "{DIR}"]),
    "ingest": (1, ["ingest", "{FILE}", "--out", "{OUT}", "--workers", "1", "--times-per-shard", "4"]),
    "forecast": (1, ["forecast", "--weights", "{W24}", "--store", "{STORE}", "--out", "{OUT}", "--members", "2",
                     "--lead", "2d", "--init-times", "test:1", "--batch", "2", "--sampler", "steps=2"]),
    "evaluate": (1, ["evaluate", "{STORE}", "--truth", "{STORE}", "--out", "{OUT}", "--plots", "none",
                     "--resamples", "5", "--levels", "500", "--climatology-from", "2000-01-01/2000-01-10"]),
    "launch": (2, ["launch", "local", "--nproc", "2", "--layout", "wp=2", "--config", "small", "--ds-config",
                   "{DS}", "--launcher", "torchrun", "--master-port", "29511", "--dry-run"]),
}
# "/" is left out of random text: an absolute path from it could be written outside the scratch folder.
TEXT = st.text(alphabet=string.ascii_letters + string.digits + "-_=.,:+ é∞", max_size=12)
NUMBERS = st.one_of(st.integers(-3, 40).map(str), st.floats(allow_nan=True, allow_infinity=True).map(str),
                    st.sampled_from(["0", "-1", "1e9", "2147483648", "0x10", "1_0", "", " ", "nan", "-inf"]))


def values(paths: dict[str, str], options: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(NUMBERS, TEXT, st.sampled_from(sorted(paths.values())), st.sampled_from(options),
                     st.sampled_from(["2d", "7h", "0h", "test:0", "train:3", "2000-01-02T06", "dp=0", "wp=2,sp=2",
                                      "steps=0", "sigma_min=5,sigma_max=1", "--help", "-h", "--debug"]))


@st.composite
def mutated(draw, line: list[str], fixed: int, paths: dict[str, str]) -> list[str]:
    """``line`` after 1–4 random drops, duplicates, swaps, replacements and insertions past its command words."""
    argv = [token.format(**paths) for token in line]
    options = [t for t in argv if t.startswith("--")] or ["--help"]
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["drop", "duplicate", "swap", "replace", "insert"]))
        n = len(argv) - fixed
        if op == "insert" or n == 0:
            argv.insert(draw(st.integers(fixed, len(argv))), draw(values(paths, options)))
            continue
        i = draw(st.integers(fixed, len(argv) - 1))
        if op == "drop":
            del argv[i]
        elif op == "duplicate":
            argv.insert(i, argv[i])
        elif op == "swap":
            j = draw(st.integers(fixed, len(argv) - 1))
            argv[i], argv[j] = argv[j], argv[i]
        else:
            argv[i] = draw(values(paths, options))
    return [a for a in argv if a != "--debug"]  # --debug shows tracebacks on purpose


@pytest.mark.parametrize("name", sorted(LINES))
def test_mutated_command_lines_end_in_exit_0_or_one_error_line(name, world):
    fixed, line = LINES[name]
    valid = [token.format(**world) for token in line]
    code, err = run_line(valid)  # the unmutated line: refused cleanly or run
    assert_clean(valid, code, err)

    @settings(FUZZ, max_examples=25)
    @given(argv=mutated(line, fixed, world))
    def check(argv: list[str]) -> None:
        assert_clean(argv, *run_line(argv))
        shutil.rmtree(world["OUT"], ignore_errors=True)  # rechunk's output: the next example starts afresh

    check()


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 10), st.floats(allow_nan=True), TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)), max_leaves=6)


@st.composite
def mutated_mapping(draw, base: dict) -> dict:
    """``base`` with 1–4 keys (at any depth) dropped, renamed, added or given a random value."""
    doc = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 4))):
        node, key = doc, None
        while True:  # walk down to a random key
            keys = sorted(node) if isinstance(node, dict) else []
            if not keys:
                break
            key = draw(st.sampled_from(keys))
            if not isinstance(node[key], dict) or draw(st.booleans()):
                break
            node, key = node[key], None
        if not isinstance(node, dict):
            continue
        op = draw(st.sampled_from(["drop", "rename", "add", "value", "value"]))
        if op == "add" or key is None:
            node[draw(TEXT)] = draw(JSON_VALUES)
        elif op == "drop":
            node.pop(key, None)
        elif op == "rename":
            node[key[:-1] + draw(st.sampled_from(["s", "e", "_", ""]))] = node.pop(key)
        else:
            node[key] = draw(JSON_VALUES)
    return doc


@st.composite
def as_text(draw, doc: dict, dump) -> str:
    """The document as text, sometimes cut short or with stray characters (a broken file)."""
    text = dump(doc)
    cut = draw(st.sampled_from(["whole", "whole", "whole", "truncate", "insert"]))
    if cut == "truncate":
        return text[:draw(st.integers(0, len(text)))]
    if cut == "insert":
        i = draw(st.integers(0, len(text)))
        return text[:i] + draw(st.sampled_from(["{", "]", ":", "\t", "- ", '"', "\n  x: [", "*a"])) + text[i:]
    return text


@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_mutated_experiment_yaml_ends_in_exit_0_or_one_error_line(world, data):
    base = load_config("tiny").model_dump(mode="json")
    text = data.draw(as_text(data.draw(mutated_mapping(base)), lambda d: yaml.safe_dump(d, sort_keys=False)))
    path = Path(world["ROOT"]) / "mutated.yaml"
    path.write_text(text)
    for argv in (["info", "--config", str(path)],
                 ["launch", "local", "--nproc", "1", "--layout", "dp=1", "--config", str(path), "--ds-config",
                  world["DS"], "--dry-run"]):
        assert_clean([*argv, text], *run_line(argv))


@settings(FUZZ, max_examples=100)
@given(data=st.data())
def test_mutated_deepspeed_json_ends_in_exit_0_or_one_error_line(world, data):
    base = json.loads(Path(world["DS"]).read_text())
    text = data.draw(as_text(data.draw(mutated_mapping(base)), lambda d: json.dumps(d, indent=1)))
    path = Path(world["ROOT"]) / "mutated.json"
    path.write_text(text)
    argv = ["launch", "local", "--nproc", "2", "--layout", "wp=2", "--config", "small", "--ds-config", str(path),
            "--dry-run"]
    assert_clean([*argv, text], *run_line(argv))
