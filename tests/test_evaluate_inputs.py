"""evaluate checks its inputs before it writes anything, and writes its folder whole or not at all."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_scorecard import _forecast, _truth

from aeris_ds.errors import DataError
from aeris_ds.evaluate.cli import main

CLIM = ["--climatology-from", "2020-01-01/2020-01-06", "--climatology-window-days", "5"]


def _stores(tmp_path, fc=None, truth=None, dtype=np.float32, member="number", completed=None):
    """The synthetic case written as zarr stores (float32 values, so a float64 copy holds the same numbers)."""
    truth = (_truth() if truth is None else truth).astype(np.float32).astype(dtype)
    fc = (_forecast(_truth()) if fc is None else fc).astype(np.float32).astype(dtype)
    if completed is not None:
        fc["completed_steps"] = (("time", "number"), completed.astype(np.int32))
    fc = fc.rename({"number": member}) if member != "number" else fc
    tag = f"{np.dtype(dtype).name}_{member}"
    fc.to_zarr(tmp_path / f"fc_{tag}.zarr", zarr_format=2)
    truth.to_zarr(tmp_path / f"truth_{tag}.zarr", zarr_format=2)
    return str(tmp_path / f"fc_{tag}.zarr"), str(tmp_path / f"truth_{tag}.zarr")


def _evaluate(fc: str, truth: str, out, *extra: str) -> pd.DataFrame:
    assert main([fc, "--truth", truth, "--out", str(out), "--variables", "temperature", *CLIM, *extra]) == 0
    return pd.read_csv(out / "scores.csv")


def test_evaluate_incomplete_forecast_refused_or_scored_on_completed_steps(tmp_path, capsys):
    fc = _forecast(_truth())
    completed = np.full((fc.sizes["time"], fc.sizes["number"]), fc.sizes["prediction_timedelta"])
    completed[1, 2] = 2  # killed after its second lead: the rest is unwritten (NaN)
    fc["temperature"][1, 2:, 2] = np.nan
    fc_path, truth_path = _stores(tmp_path, fc, completed=completed)
    out = tmp_path / "eval"
    with pytest.raises(DataError, match=r"fc_float32_number\.zarr is incomplete: 1 of 8 .*--partial"):
        main([fc_path, "--truth", truth_path, "--out", str(out), *CLIM])
    assert not out.exists()
    scores = _evaluate(fc_path, truth_path, out, "--partial")
    assert "scored only the first 2 of 4 lead times" in capsys.readouterr().out
    assert sorted(scores["lead_hours"].unique()) == [0, 6]
    assert "first 2 of 4" in json.loads((out / "scores.json").read_text())["partial"]
    assert "first 2 of 4" in (out / "scorecard.txt").read_text()
    full_path, _ = _stores(tmp_path / "full", fc.isel(prediction_timedelta=slice(0, 2)))
    expected = _evaluate(full_path, truth_path, tmp_path / "eval_full")
    np.testing.assert_allclose(scores["value"], expected["value"], rtol=1e-12)
    assert np.isfinite(scores.query("system == 'forecast' and metric == 'rmse'")["value"]).all()


def test_evaluate_truth_on_another_grid_refused_before_any_file_is_written(tmp_path):
    fc_path, truth_path = _stores(tmp_path)
    out = tmp_path / "eval"
    _evaluate(fc_path, truth_path, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    shifted = _truth().assign_coords(longitude=np.arange(5, 365, 10.0))  # same size, other points
    (tmp_path / "other").mkdir()
    _, other = _stores(tmp_path / "other", truth=shifted)
    with pytest.raises(DataError, match=r"different grids: longitude has 36 values 0\.\.350 in the forecast, "
                                        r"36 values 5\.\.355"):
        main([fc_path, "--truth", other, "--out", str(out), "--overwrite", *CLIM])
    (tmp_path / "coarse").mkdir()
    _, coarse = _stores(tmp_path / "coarse", truth=_truth().isel(latitude=slice(1, -1)))  # an overlapping grid
    with pytest.raises(DataError, match=r"latitude has 19 values -90\.\.90 in the forecast, 17 values"):
        main([fc_path, "--truth", coarse, "--out", str(tmp_path / "new"), *CLIM])
    assert not (tmp_path / "new").exists()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before, "the old evaluation stays as it was"
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no temporary left behind"


@pytest.mark.parametrize("member", ["member", "realization"])
def test_evaluate_member_dim_names_score_as_an_ensemble(tmp_path, member):
    expected = _evaluate(*_stores(tmp_path), tmp_path / "number")
    got = _evaluate(*_stores(tmp_path, member=member), tmp_path / member)
    pd.testing.assert_frame_equal(got, expected)
    assert (got.query("system == 'forecast' and metric == 'spread'")["value"] > 0).all()


def test_evaluate_float32_stores_score_as_float64(tmp_path):
    single = _evaluate(*_stores(tmp_path), tmp_path / "f32")
    double = _evaluate(*_stores(tmp_path, dtype=np.float64), tmp_path / "f64")
    np.testing.assert_allclose(single["value"], double["value"], rtol=1e-12, atol=0)


def test_evaluate_missing_truth_times_named_and_outputs_never_replaced_silently(tmp_path):
    fc_path, truth_path = _stores(tmp_path)
    (tmp_path / "short").mkdir()
    _, short = _stores(tmp_path / "short", truth=_truth().sel(time=slice(None, "2020-01-09")))
    with pytest.raises(DataError, match=r"truth_float32_number\.zarr: truth lacks 1 time\(s\) needed for the "
                                        r"forecast's init and valid times: 2020-01-10T12:00:00"):
        main([fc_path, "--truth", short, "--out", str(tmp_path / "eval"), *CLIM])
    from aeris_ds.errors import OutputError

    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    for out, why in ((other, "not an output of aeris-ds"), (tmp_path / "fc_float32_number.zarr" / "x", "inside")):
        with pytest.raises(OutputError, match=why):
            main([fc_path, "--truth", truth_path, "--out", str(out), "--overwrite", *CLIM])
    _evaluate(fc_path, truth_path, tmp_path / "eval")
    with pytest.raises(OutputError, match="pass --overwrite"):
        main([fc_path, "--truth", truth_path, "--out", str(tmp_path / "eval"), *CLIM])
    _evaluate(fc_path, truth_path, tmp_path / "eval", "--overwrite")
    assert (other / "notes.txt").read_text() == "keep"
