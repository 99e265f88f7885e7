"""Normalization stats against numpy on the whole training split, read independently through xarray."""

from __future__ import annotations

import numpy as np
import pytest

from aeris_ds.config import load_config
from aeris_ds.data import schema
from aeris_ds.data import source as source_module
from aeris_ds.data.source import WeatherSource
from aeris_ds.data.stats import compute_stats, load_stats


@pytest.mark.parametrize("block_times", [1, 3, None], ids=["1-time", "3-time", "whole-chunks"])
def test_data_stats_match_numpy_area_weighted(tiny_store, monkeypatch, block_times):
    cfg = load_config("tiny").data
    source = WeatherSource(tiny_store, cfg, "train")
    if block_times:  # blocks that do not divide n nor the chunks: the seams (lead pairs across blocks) add up right
        per_time = 4 * cfg.n_channels * len(source.lat) * len(source.lon)
        monkeypatch.setattr(source_module, "_BLOCK_BYTES", block_times * per_time)
    ds = schema.open_store(tiny_store).load()
    first = source.time_index(0)
    n, lead = source.n_samples, source.lead_steps
    channels = [ds[v].sel(level=lev).values for v in cfg.atmospheric for lev in cfg.levels]
    field = np.stack(channels + [ds[v].values for v in cfg.surface], axis=1).astype(np.float64)  # [T, C, lat, lon]
    x, y = field[first:first + n], field[first + lead:first + lead + n]
    # Area weights ∝ cos(latitude), the same for every longitude and time.
    w = np.broadcast_to(np.cos(np.deg2rad(ds["latitude"].values))[:, None], x.shape[2:])
    w = np.broadcast_to(w, (n, *w.shape))

    def moment(a: np.ndarray) -> np.ndarray:
        return np.array([np.average(a[:, c], weights=w) for c in range(a.shape[1])])

    mean = moment(x)
    std = np.sqrt(moment((x - mean[None, :, None, None]) ** 2))
    tendency_rms = np.sqrt(moment((y - x) ** 2))  # the residual x0 = Δ/σ_Δ then has E[x0²] = 1, as σ_d = 1 assumes

    stats = compute_stats(source, progress=False)
    assert stats.channels == cfg.channel_names and stats.n_times == n
    # Normalisation needs the mean to a small fraction of the std (a zero-mean wind has no relative precision).
    np.testing.assert_array_less(np.abs(np.array(stats.mean) - mean), 1e-6 * (np.abs(mean) + std))
    np.testing.assert_allclose(stats.std, std, rtol=1e-4)
    np.testing.assert_allclose(stats.tendency_std, tendency_rms, rtol=1e-5)
    # The fixture's stored stats are these.
    stored = load_stats(tiny_store, cfg.channel_names, cfg.lead_hours)
    np.testing.assert_array_less(np.abs(np.array(stored.mean) - mean), 1e-6 * (np.abs(mean) + std))


def test_data_stats_and_heldsuarez_never_replace_what_they_did_not_write(tiny_store, tmp_path, capsys):
    import shutil

    from aeris_ds.cli import dispatch
    from aeris_ds.data.stats import stats_path
    from aeris_ds.errors import run_command

    store = tmp_path / "s.zarr"
    shutil.copytree(tiny_store, store)
    stats = ["data", "stats", "--store", str(store), "--config", "tiny"]
    assert run_command(dispatch, stats) == 0 and stats_path(store).exists()
    first = stats_path(store).read_text()
    assert run_command(dispatch, stats) == 2 and "pass --overwrite" in capsys.readouterr().err
    assert run_command(dispatch, [*stats, "--overwrite"]) == 0 and stats_path(store).read_text() == first
    stats_path(store).write_text('{"my": "notes"}')
    assert run_command(dispatch, [*stats, "--overwrite"]) == 2
    assert "not an output of aeris-ds" in capsys.readouterr().err
    assert stats_path(store).read_text() == '{"my": "notes"}'
    # The generator refuses an existing folder it did not make, before any model is built.
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "weights.pt").write_bytes(b"keep")
    assert run_command(dispatch, ["data", "heldsuarez", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "not a resumable Held-Suarez generation" in err and len(err.splitlines()) == 1
    assert (tmp_path / "run" / "weights.pt").read_bytes() == b"keep"


def test_data_stats_path_away_from_the_store(tiny_store, tmp_path, capsys):
    """``data.stats`` puts the stats anywhere (a read-only WB2 store's folder cannot hold them); a missing file
    is one line naming it and the command that makes it."""
    import yaml

    from aeris_ds.cli import dispatch
    from aeris_ds.config import load_config
    from aeris_ds.data.stats import stats_path
    from aeris_ds.errors import MissingPathError, run_command

    cfg = load_config("tiny", {"data": {"stats": str(tmp_path / "mine" / "era5.stats.json")}})
    config = tmp_path / "era5.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    before = sorted(p.name for p in tiny_store.parent.iterdir())
    assert run_command(dispatch, ["data", "stats", "--store", str(tiny_store), "--config", str(config)]) == 0
    assert sorted(p.name for p in tiny_store.parent.iterdir()) == before  # nothing written beside the store
    d = cfg.data
    assert load_stats(tiny_store, d.channel_names, d.lead_hours, path=d.stats) == \
        load_stats(tiny_store, d.channel_names, d.lead_hours)  # the same numbers as the fixture's, beside it
    assert stats_path(tiny_store, d.stats) == tmp_path / "mine" / "era5.stats.json"
    with pytest.raises(MissingPathError) as err:
        load_stats(tiny_store, d.channel_names, d.lead_hours, str(config), path=tmp_path / "gone.json")
    assert str(err.value) == (f"normalization stats {tmp_path / 'gone.json'} missing: run "
                              f"`aeris-ds data stats --store {tiny_store} --config {config}`")
