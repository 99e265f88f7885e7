"""The `aeris-ds` entry point: info without allocating, and its errors."""

from __future__ import annotations

import json

import pytest

from aeris_ds.cli import main
from aeris_ds.config import load_config, parse_layout
from aeris_ds.perf.flops import parameter_counts


def test_info_parameter_count_equals_the_built_model():
    from aeris_ds.model.swin_dit import single_process_model

    for name in ("tiny", "small"):
        cfg = load_config(name)
        model, _ = single_process_model(cfg)
        assert parameter_counts(cfg)["total"] == sum(p.numel() for p in model.parameters()), name


def test_info_describes_paper_scale_without_allocating(capsys):
    main(["info", "--config", "aeris-40b"])
    out = capsys.readouterr().out
    assert "40,886,341,702" in out and "dp=1,pp=20,wp=36,sp=12" in out
    assert "0.180 of tokens" in out  # the shifted block's re-layout at the paper's layout (DESIGN: ~0.18)
    main(["info", "--config", "tiny"])
    assert "38,314" in capsys.readouterr().out


def test_cli_errors_name_the_cause(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["trian"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: unknown command 'trian'; one of: info, data, train")
    with pytest.raises(ValueError, match="bad layout item 'xp=2'"):
        parse_layout("xp=2,dp=1")
    with pytest.raises(FileNotFoundError, match=r"not found \(presets: aeris-1.3b, aeris-40b, small,.* tiny\)"):
        load_config("nano")


def test_demo_loss_plot_writes_a_png_from_a_resumed_log(tmp_path):
    from aeris_ds.demo import plot_loss

    lines = [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 9.0}, {"step": 2, "loss": 0.5}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    png = plot_loss(tmp_path / "m.jsonl", tmp_path / "loss.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
