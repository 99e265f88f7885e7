"""tools/quality.py: budgets from either summary layout, one column per recipe and budget, atomic outputs."""

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("quality_tool", ROOT / "tools" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scores(folder: Path, value: float) -> None:
    rows = [("forecast", "rmse_ratio_persistence", "geopotential", 500.0, 24.0, value, value - 0.01, value + 0.01),
            ("persistence", "rmse_ratio_persistence", "geopotential", 500.0, 24.0, 1.0, 1.0, 1.0)]
    folder.mkdir(parents=True)
    pd.DataFrame(rows, columns=["system", "metric", "variable", "level", "lead_hours", "value", "lo", "hi"]).to_csv(
        folder / "scores.csv", index=False)
    diagnostics = [{"diagnostic": "power_ratio_high", "level": 500.0, "geopotential": 2 * value, "lead_hours": 24.0}]
    (folder / "scores.json").write_text(json.dumps({"stability": {"diagnostics": diagnostics}}))


def test_recipes_share_one_table(tmp_path):
    former, current, scores = tmp_path / "former", tmp_path / "current" / "m48", tmp_path / "scores"
    former.mkdir()
    (former / "m5.summary.json").write_text(json.dumps({"steps": 10, "samples_seen": 40, "final_lr": 1e-4}))
    (former / "slow-sim.summary.json").write_text(json.dumps({"steps": 1}))  # not a budget: ignored
    current.mkdir(parents=True)
    (current / "summary.json").write_text(json.dumps({"steps": 100, "samples_seen": 400, "final_lr": 5e-5}))
    _scores(scores / "m5-10d-20x8", 0.6)
    _scores(scores / "m48-10d-20x8", 0.3)
    out = tmp_path / "out"
    _tool().main(["--runs", f"former={former}", f"current={tmp_path / 'current'}", "--scores", str(scores),
                  "--out", str(out)])
    table = (out / "quality.md").read_text().splitlines()
    assert table[0] == "| | former 5 min | current 48 min |"
    z500 = next(line for line in table if line.startswith("| z500 RMSE/pers 1d |"))
    assert z500 == "| z500 RMSE/pers 1d | 0.6 [0.59, 0.61] | 0.3 [0.29, 0.31] |"
    assert "| z500 high-band power 1d | 1.2 | 0.6 |" in table
    frame = pd.read_csv(out / "quality.csv")
    assert list(frame.recipe) == ["former", "current"] and list(frame.samples_seen) == [40, 400]
    assert (out / "quality.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in out.iterdir()) == ["quality.csv", "quality.md", "quality.png"]  # no temporaries


def test_no_budgets_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match="no trained budgets"):
        _tool().main(["--runs", str(tmp_path), "--out", str(tmp_path / "out")])
