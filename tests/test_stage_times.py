"""The main job's stage timer: seconds per stage in a JSON file and a table, skipped stages named."""

import json
import time

from aeris_ds.stage_times import INSTALL_ENV, StageTimes


def test_stage_times_records_writes_and_tabulates(tmp_path, monkeypatch):
    monkeypatch.setenv(INSTALL_ENV, "120.0")
    times = StageTimes(tmp_path / "run" / "timings.json", ["install", "data", "stats", "train", "score"])
    with times("data"):
        time.sleep(0.2)
    times.skip("stats")
    try:
        with times("train"):
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass  # an interrupted stage still records its time
    record = json.loads((tmp_path / "run" / "timings.json").read_text())
    assert list(record["seconds"]) == ["install", "data", "train"] and record["skipped"] == ["stats"]
    assert record["seconds"]["install"] == 120.0 and 0.2 <= record["seconds"]["data"] < 5
    assert record["total_seconds"] == round(sum(times.seconds.values()), 1)
    lines = times.table().splitlines()
    assert lines[1].split()[:3] == ["install", "2.0", "m"]
    assert "skipped (output present)" in lines[3] and "not timed" in lines[5]
    assert lines[-1].startswith("total")
    assert not list((tmp_path / "run").glob(".*tmp"))
    # A rerun that finds the data done keeps the earlier run's data time (and install, when not reinstalled).
    monkeypatch.delenv(INSTALL_ENV)
    again = StageTimes(tmp_path / "run" / "timings.json", ["install", "data", "stats", "train", "score"])
    again.skip("data")
    with again("score"):
        pass
    assert again.seconds["data"] == record["seconds"]["data"] and again.seconds["install"] == 120.0
    assert "(earlier run)" in again.table().splitlines()[2] and "train" not in again.seconds
