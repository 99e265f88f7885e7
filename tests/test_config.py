"""Configs: every preset loads and paper-scale configs are described without allocating; bad input of
every kind stops with an error naming its cause before any training step."""

from __future__ import annotations

import pytest
from ranks import run_ranks

from aeris_ds.config import PRESET_DIR, load_config, load_ds_config
from aeris_ds.parallel.layout import WindowGrid
from aeris_ds.parallel.state import validate_layout

PRESETS = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


@pytest.mark.parametrize("name", PRESETS)
def test_config_presets_load_with_their_ds_config(name):
    cfg = load_config(name)
    assert cfg.name == name
    ds = load_ds_config(cfg.train.ds_config)
    assert ds["train_micro_batch_size_per_gpu"] >= 1
    layout = cfg.layout.as_layout()
    grid = WindowGrid(cfg.grid.lat, cfg.grid.lon, cfg.model.window, layout.wp, layout.sp,
                      cfg.layout.window_assignment, cfg.model.lat_mode)
    validate_layout(layout, layout.world, grid, cfg.model.heads, cfg.model.depth)


@pytest.mark.parametrize("name,world", [("aeris-1.3b", 4 * 12 * 4), ("aeris-40b", 20 * 36 * 12)])
def test_config_paper_scale_described_without_allocating(name, world):
    """720×1440 at 70 channels; the layout's windows and home tokens are worked out from geometry alone."""
    cfg = load_config(name)
    assert (cfg.grid.lat, cfg.grid.lon, cfg.model.window) == (720, 1440, (30, 30))
    assert cfg.data.n_channels == 70
    assert cfg.in_channels == 2 * 70 + 7  # noisy tendency, state, solar + 2 statics + 4 time encodings
    layout = cfg.layout.as_layout()
    assert layout.world == world
    grid = WindowGrid(720, 1440, (30, 30), layout.wp, layout.sp, cfg.layout.window_assignment)
    assert len(grid.home_ids(layout.wp - 1, layout.sp - 1)) * layout.wp * layout.sp == 720 * 1440


@pytest.mark.parametrize("override,cause", [
    ({"model": {"dimm": 64}}, "dimm"),
    ({"grid": {"lat": 20}}, "not divisible by window"),
    ({"model": {"dim": 30, "heads": 4}}, "not divisible by model.heads"),
    ({"layout": {"sp": 0}}, "layout.sp"),
    ({"diffusion": {"sigma_min": 600}}, "sigma_min"),
])
def test_config_rejects_bad_yaml(override, cause):
    with pytest.raises(ValueError, match=cause):
        load_config("tiny", override)


def test_config_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_ds_config("ds_configs/nope.json")
    with pytest.raises(FileNotFoundError, match="no-such-preset"):
        load_config("no-such-preset")


def _bad_runs(store: str, out: str) -> dict[str, str]:
    """Each bad setup through train.run; returns the error text per case ('' when nothing was raised)."""
    from aeris_ds.train import run

    cases = {
        "world": ({"layout": {"dp": 2}}, {}),
        "heads_sp": ({"layout": {"sp": 3}, "model": {"window": [8, 6]}, "grid": {"lat": 16, "lon": 36}}, {}),
        "stats": ({"data": {"levels": [500]}}, {}),
        "variable": ({"data": {"surface": ["2m_temperature", "sea_surface_temperature"]}}, {}),
        "zero3_with_pipeline": ({"layout": {"pp": 2}}, {"zero_optimization": {"stage": 3}}),
    }
    errors = {}
    for name, (override, ds_override) in cases.items():
        cfg = load_config("tiny", {**override, "data": {"store": store, **override.get("data", {})},
                                   "train": {"out_dir": f"{out}/{name}"}})
        try:
            run(cfg, {**load_ds_config(cfg.train.ds_config), **ds_override})
            errors[name] = ""
        except Exception as err:  # noqa: BLE001 - the message is what the test checks
            errors[name] = f"{type(err).__name__}: {err}"
    return errors


def test_config_bad_setups_fail_before_any_step(tiny_store, tmp_path):
    (errors,) = run_ranks(1, _bad_runs, str(tiny_store), str(tmp_path), tmp=tmp_path / "ranks")
    expected = {
        "world": "has 2 ranks but the world has 1",
        "heads_sp": "model.heads=4 is not divisible by SP=3",
        "stats": "were made for channels",
        "variable": "'sea_surface_temperature' is missing",
        "zero3_with_pipeline": "ZeRO stage 3 cannot run with DeepSpeed's pipeline engine",
    }
    for name, text in expected.items():
        assert text in errors[name], f"{name}: {errors[name] or 'no error raised'}"
        assert not (tmp_path / name / "metrics.jsonl").exists(), f"{name}: a step ran before the error"
