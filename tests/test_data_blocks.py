"""Per-rank block reads: a rank fetches only the chunks of its own windows (its 1/SP slice), and returns
exactly its tokens in window-major order, equal to a hand-indexed full-field read.

Bytes are counted by a zarr store wrapper (source.CountingStore) under the reader, so nothing in the reader
can hide a read from it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from zarr.storage import LocalStore

from aeris_ds.config import load_config
from aeris_ds.data import schema, solar
from aeris_ds.data.source import CountingStore, WeatherSource
from aeris_ds.data.stats import compute_stats
from aeris_ds.data.synthetic import synthetic_store
from aeris_ds.examples import TrainingExamples
from aeris_ds.parallel.layout import WindowGrid

LAT, LON, WINDOW = 32, 64, (8, 8)
TIME_BLOCK = 4  # times per inner chunk of the test stores: a read fetches the time blocks of its times
LAYOUTS = [(1, 1), (2, 1), (1, 2), (2, 2), (4, 1)]  # (WP, SP)
SAMPLE = 5


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    """The same 32×64 data in inner chunks of 4 times × lat 8 × lon 16 and 4 times × lat 4 × lon 16 (what an
    SP=2 slice of an 8-row window needs to be read without waste)."""
    tmp = tmp_path_factory.mktemp("blocks")
    ds = schema.open_store(synthetic_store(tmp / "base.zarr", LAT, LON, days=3)).load()
    return {name: schema.write_store(ds, tmp / f"{name}.zarr",
                                     inner_chunks={"time": TIME_BLOCK, "latitude": rows, "longitude": 16})
            for name, rows in (("c8", 8), ("c4", 4))}


def _cfg(preload: bool = False):
    return load_config("tiny", {"grid": {"lat": LAT, "lon": LON},
                                "data": {"forcings": ["toa_solar", "time"], "preload": preload}})


@pytest.fixture(scope="module")
def stats(stores):
    return compute_stats(WeatherSource(stores["c8"], _cfg().data, "train"), progress=False)


def _rank_examples(path: Path, stats, wp: int, sp: int, preload: bool = False):
    """Examples of every rank of a WP×SP layout, each on its own counting store."""
    cfg = _cfg(preload)
    grid = WindowGrid(LAT, LON, WINDOW, wp, sp)
    out = {}
    for w in range(wp):
        for s in range(sp):
            store = CountingStore(LocalStore(path, read_only=True))
            ex = TrainingExamples(WeatherSource(path, cfg.data, "train", store=store), stats, cfg, grid, w, s, 3)
            out[w, s] = ex, store, grid
    return out


def _touched_chunks(rows: np.ndarray, cols: np.ndarray, chunk: tuple[int, int]) -> int:
    """Inner chunks a rows × cols block touches, counted by hand from the chunk shape."""
    return len(np.unique(rows // chunk[0])) * len(np.unique(cols // chunk[1]))


@pytest.mark.parametrize("chunking", ["c4", "c8"])
def test_block_reads_fetch_only_the_rank_share(stores, stats, chunking):
    chunk = (4 if chunking == "c4" else 8, 16)
    cfg = _cfg()
    n_vars = len(cfg.data.atmospheric) + len(cfg.data.surface)
    source = WeatherSource(stores[chunking], cfg.data, "train")
    t0 = source.time_index(SAMPLE)
    time_blocks = len({t0 // TIME_BLOCK, (t0 + source.lead_steps) // TIME_BLOCK})  # state and target

    def sample_reads(examples):
        fetched = {}
        for key, (ex, store, _) in examples.items():
            store.reset()  # construction reads metadata and coordinates only
            ex.example(SAMPLE, 0)
            fetched[key] = dict(store.chunks)
        return fetched

    whole = _rank_examples(stores[chunking], stats, 1, 1)
    full = sample_reads(whole)[0, 0]
    full_bytes = sum(full.values())
    # Shard indexes are read once per source, not once per sample (they are larger than a rank's block).
    ex, store, _ = whole[0, 0]
    assert store.index_bytes > 0
    store.reset()
    ex.example(SAMPLE + 1, 0)
    assert store.index_bytes == 0 and len(store.chunks) == len(full)
    assert len(full) == n_vars * time_blocks * (LAT // chunk[0]) * (LON // chunk[1])
    # Uncompressed chunks (+ a 4-byte crc32c): each read is a whole time block of its lat/lon block, all levels.
    levels = len(source.ds["level"])
    want = {TIME_BLOCK * 4 * chunk[0] * chunk[1] * k + 4 for k in (1, levels)}
    assert set(full.values()) == want
    for wp, sp in LAYOUTS[1:]:
        examples = _rank_examples(stores[chunking], stats, wp, sp)
        fetched = sample_reads(examples)
        aligned = chunk[0] <= WINDOW[0] // sp  # the SP slice of a window covers whole chunk rows
        for (w, s), chunks in fetched.items():
            ex, _, _ = examples[w, s]
            per_field = _touched_chunks(ex.rows, ex.cols, chunk)
            assert len(chunks) == n_vars * time_blocks * per_field, (wp, sp, w, s)
            assert set(chunks) <= set(full)
            if aligned:
                assert len(chunks) * wp * sp == len(full)
                assert sum(chunks.values()) * wp * sp == full_bytes, (wp, sp, w, s)
        union = set().union(*map(set, fetched.values()))
        assert union == set(full), "the ranks together must read the whole sample"
        if aligned:
            assert sum(map(len, fetched.values())) == len(full), "a chunk was read by two ranks"
        else:
            # 8-row chunks and a 4-row SP slice: each SP rank reads the rows of the other one too.
            assert sum(map(len, fetched.values())) == sp * len(full)


@pytest.mark.parametrize(("wp", "sp", "preload"), [(1, 1, False), (2, 2, False), (4, 1, False), (1, 2, True)])
def test_block_tokens_match_hand_indexed_full_field(stores, stats, wp, sp, preload):
    """State, target residual, forcings and noise of each rank equal a full-field numpy reference indexed by
    the rank's home token ids (window-major, its 1/SP slice of each window)."""
    cfg = _cfg(preload)
    ds = schema.open_store(stores["c8"]).load()
    source = WeatherSource(stores["c8"], cfg.data, "train")
    t0 = source.time_index(SAMPLE)
    t1 = t0 + source.lead_steps

    def field(t: int) -> np.ndarray:  # [C, lat·lon] straight from xarray, channels in the config's order
        atm = [ds[v].sel(level=lev).values[t] for v in cfg.data.atmospheric for lev in cfg.data.levels]
        return np.stack(atm + [ds[v].values[t] for v in cfg.data.surface]).reshape(-1, LAT * LON)

    mean, std, tend = (a[:, None] for a in stats.arrays())
    x, y = field(t0), field(t1)
    want_state = (x - mean) / std
    want_x0 = (y - x) / tend
    flux = solar.toa_incident_solar_radiation(ds["time"].values[t1:t1 + 1], ds["latitude"].values,
                                              ds["longitude"].values)[0]
    want_solar = flux.reshape(-1) / solar.SOLAR_CONSTANT
    n_ch = cfg.data.n_channels
    full_inp, full_t, full_v = _rank_examples(stores["c8"], stats, 1, 1)[0, 0][0].example(SAMPLE, 0)
    full_ids = WindowGrid(LAT, LON, WINDOW).home_ids(0, 0)
    position = np.argsort(full_ids)  # grid id -> position in the full sample's token order

    seen = []
    for (w, s), (ex, _, grid) in _rank_examples(stores["c8"], stats, wp, sp, preload).items():
        ids = grid.home_ids(w, s)
        seen.append(ids)
        inp, t, v = ex.example(SAMPLE, 0)
        assert inp.shape == (len(ids), 2 * n_ch + cfg.data.n_forcings) and t == full_t
        x_t, state, forcing = inp[:, :n_ch], inp[:, n_ch:2 * n_ch], inp[:, 2 * n_ch:]
        np.testing.assert_allclose(state, want_state[:, ids].T, rtol=1e-5, atol=1e-5)
        # TrigFlow with σ_d = 1: cos t·x_t − sin t·v = x0, the normalised residual.
        np.testing.assert_allclose(np.cos(t) * x_t - np.sin(t) * v, want_x0[:, ids].T, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(forcing[:, 0], want_solar[ids], rtol=1e-5, atol=1e-6)
        # The noise, and so the whole example, is the full sample's, token for token.
        np.testing.assert_array_equal(inp, full_inp[position[ids]])
        np.testing.assert_array_equal(v, full_v[position[ids]])
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(LAT * LON))
    z = np.sin(full_t) * full_inp[:, :n_ch] + np.cos(full_t) * full_v
    assert abs(z.std() - 1) < 0.05 and abs(z.mean()) < 0.05
