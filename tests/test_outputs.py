"""The safe-output helper every writer uses: inputs are never targets, a failed write leaves the old output."""

from __future__ import annotations

import pytest

from aeris_ds.errors import OutputError
from aeris_ds.outputs import MARKER, atomic_replace, check_output, kind_of, writing


def test_outputs_symlinked_input_refused_and_failed_write_keeps_the_old_output(tmp_path):
    data = tmp_path / "data.zarr"
    data.mkdir()
    (tmp_path / "alias").symlink_to(data)
    with pytest.raises(OutputError, match="is the input"):
        check_output(tmp_path / "alias", "evaluation", inputs=[data])
    with pytest.raises(OutputError, match="is inside the input"):
        check_output(tmp_path / "alias" / "scores", "evaluation", inputs=[data])

    out = tmp_path / "scores"
    with writing(out, "evaluation") as tmp:
        (tmp / "a.txt").parent.mkdir()
        (tmp / "a.txt").write_text("old")
    assert kind_of(out) == "evaluation" and (out / MARKER).exists()
    with pytest.raises(RuntimeError, match="plot crashed"), writing(out, "evaluation") as tmp:
        tmp.mkdir()
        (tmp / "a.txt").write_text("new")
        raise RuntimeError("plot crashed")
    assert (out / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alias", "data.zarr", "scores"]
    assert check_output(out, "evaluation", overwrite=True) is False
    with pytest.raises(OutputError, match="is an aeris-ds evaluation output, not a forecast"):
        check_output(out, "forecast", overwrite=True)


def test_atomic_replace_swaps_whole_files_and_a_failed_write_keeps_the_old_one(tmp_path):
    log = tmp_path / "metrics.jsonl"
    (tmp_path / ".metrics.jsonl.tmp").write_text("left by a killed write")
    for text in ("old", "new"):  # creates, then replaces a file the code owns: no marker, no refusal
        with atomic_replace(log) as tmp:
            assert not log.exists() or log.read_text() == "old"  # the old file stays until the rename
            tmp.write_text(text)
    assert log.read_text() == "new"
    with pytest.raises(RuntimeError, match="disk full"), atomic_replace(log) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert log.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]
