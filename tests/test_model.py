"""The Swin DiT's pieces against independent references: window geometry, shifted-window attention as one
dense masked attention over the whole grid, RoPE, overfitting one batch, pipeline vs sequential build."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ranks import run_ranks

from aeris_ds.config import load_config
from aeris_ds.model.layers import AxialRoPE2D
from aeris_ds.model.swin_dit import SequentialDiT, WindowAttention, build_model, layer_specs
from aeris_ds.parallel.layout import WindowGrid
from aeris_ds.parallel.router import WindowRouting

# (lat, lon, window, wp, sp): one process, window splits, sequence splits, both together, uneven windows.
GRIDS = [(16, 32, (8, 8), 1, 1), (16, 32, (8, 8), 2, 1), (16, 32, (8, 8), 4, 2), (24, 48, (6, 8), 3, 4),
         (24, 48, (6, 8), 6, 3), (20, 40, (4, 10), 10, 2)]


def _each_once(lists: list[np.ndarray], n: int) -> None:
    ids = np.concatenate([np.asarray(a).reshape(-1) for a in lists])
    np.testing.assert_array_equal(np.sort(ids), np.arange(n))


@pytest.mark.parametrize("assignment", ["blocks", "round_robin"])
@pytest.mark.parametrize("lat,lon,window,wp,sp", GRIDS)
def test_window_partition_round_trip(lat, lon, window, wp, sp, assignment):
    """Home and attention tokens cover the grid exactly once; reading a rank's block gives its home tokens,
    and writing every rank's home tokens back rebuilds the field."""
    grid = WindowGrid(lat, lon, window, wp, sp, assignment)
    ranks = [(w, s) for w in range(wp) for s in range(sp)]
    _each_once([grid.home_ids(w, s) for w, s in ranks], grid.n_tokens)
    for shifted in (False, True):
        _each_once([grid.attention_ids(w, shifted) for w in range(wp)], grid.n_tokens)
    field = np.random.default_rng(0).standard_normal((lat, lon))
    merged = np.full(grid.n_tokens, np.nan)
    for w, s in ranks:
        rows, cols, take = grid.read_block(w, s)
        home = field[rows][:, cols].reshape(-1)[take]
        np.testing.assert_array_equal(home, field.reshape(-1)[grid.home_ids(w, s)])
        merged[grid.home_ids(w, s)] = home
    np.testing.assert_array_equal(merged.reshape(lat, lon), field)


def test_window_moved_fraction_paper_layout():
    """Contiguous blocks move only the half-window strips at block edges, round-robin 3/4 of all tokens
    (DESIGN §3: 720×1440, 30×30 windows, WP=36 → f ≈ 0.18 vs 0.75)."""
    blocks = WindowGrid(720, 1440, (30, 30), wp=36)
    bh, bw = (n * 30 for n in blocks.block_shape)
    assert blocks.moved_fraction() == pytest.approx(1 - (1 - 15 / bh) * (1 - 15 / bw))
    assert blocks.moved_fraction() == pytest.approx(0.18, abs=0.005)
    assert WindowGrid(720, 1440, (30, 30), wp=36, assignment="round_robin").moved_fraction() == 0.75


def _dense_reference(attn: WindowAttention, x: torch.Tensor, lat: int, lon: int, window: tuple[int, int],
                     shifted: bool, lat_mode: str) -> torch.Tensor:
    """Attention over the whole grid (tokens in grid order) with a mask built from coordinates alone."""
    wh, ww = window
    rows, cols = np.divmod(np.arange(lat * lon), lon)
    s0, s1 = (wh // 2, ww // 2) if shifted else (0, 0)
    r, c = (rows - s0) % lat, (cols - s1) % lon  # coordinates in the grid rolled by the shift
    win = (r // wh) * (lon // ww) + c // ww
    allowed = win[:, None] == win[None, :]
    if shifted and lat_mode == "mask":
        # No attention across the pole wrap: tokens of one window must be within a window height in latitude.
        allowed &= np.abs(rows[:, None] - rows[None, :]) < wh
    rope = AxialRoPE2D(attn.head_dim, np.stack([r % wh, c % ww], axis=1))
    B, N, D = x.shape
    q, k, v = attn.qkv(x).view(B, N, 3, attn.heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    o = F.scaled_dot_product_attention(rope(q), rope(k), v, attn_mask=torch.from_numpy(allowed))
    return attn.proj(o.transpose(1, 2).reshape(B, N, D))


@pytest.mark.parametrize("lat_mode", ["mask", "roll"])
@pytest.mark.parametrize("shifted", [False, True], ids=["plain", "shifted"])
def test_window_attention_matches_dense_masked_reference(shifted, lat_mode):
    lat, lon, window, dim, heads = 16, 24, (8, 6), 32, 4
    grid = WindowGrid(lat, lon, window, lat_mode=lat_mode)
    torch.manual_seed(0)
    attn = WindowAttention(dim, heads, WindowRouting(grid, 0, 0), shifted)
    x = torch.randn(2, lat * lon, dim)
    home = torch.from_numpy(grid.home_ids(0, 0))
    with torch.no_grad():
        got = attn(x[:, home])
        want = _dense_reference(attn, x, lat, lon, window, shifted, lat_mode)[:, home]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_rope_scores_depend_only_on_relative_offset():
    head_dim = 16
    rng = np.random.default_rng(0)
    starts = rng.integers(0, 20, size=(50, 2))
    offsets = np.array([[0, 0], [1, 0], [0, 1], [3, -2], [-5, 4]])
    q, k = torch.randn(head_dim), torch.randn(head_dim)

    def scores(offset: np.ndarray) -> torch.Tensor:
        rq = AxialRoPE2D(head_dim, starts)(q.expand(len(starts), -1))
        rk = AxialRoPE2D(head_dim, starts + offset)(k.expand(len(starts), -1))
        return (rq * rk).sum(-1)

    per_offset = [scores(d) for d in offsets]
    for s in per_offset:  # the same wherever the pair sits
        torch.testing.assert_close(s, s[:1].expand_as(s), rtol=1e-5, atol=1e-5)
    distinct = torch.stack([s[0] for s in per_offset])
    assert (distinct[1:] - distinct[0]).abs().min() > 1e-3, "row and column offsets must both change the score"
    torch.testing.assert_close(distinct[0], q @ k, rtol=1e-5, atol=1e-5)


def _tiny_specs(dim: int = 32, depth: int = 2):
    cfg = load_config("tiny", {"model": {"dim": dim, "depth": depth}})
    grid = WindowGrid(cfg.grid.lat, cfg.grid.lon, cfg.model.window)
    torch.manual_seed(1)
    position = torch.randn(grid.n_tokens, 4 * cfg.model.pos_freqs)
    return cfg, layer_specs(cfg, WindowRouting(grid, 0, 0), position), grid.n_tokens


def _randomize_zero_inits(model: torch.nn.Module, seed: int) -> None:
    """adaLN and the head start at zero (the output would be 0 whatever the rest): give them values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))


def test_tiny_model_overfits_one_batch():
    cfg, specs, n_tokens = _tiny_specs(dim=64)
    model = SequentialDiT(specs, seed=0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, n_tokens, cfg.in_channels, generator=gen)
    t = torch.tensor([0.3, 1.2])
    target = torch.randn(2, n_tokens, cfg.data.n_channels, generator=gen)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = F.mse_loss(model(x, t), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0], f"loss {losses[0]:.3f} → {losses[-1]:.3f}"


def _pipeline_vs_sequential() -> float:
    import deepspeed
    from deepspeed.runtime.pipe.topology import ProcessTopology

    deepspeed.init_distributed(verbose=False)
    cfg, specs, n_tokens = _tiny_specs()
    topology = ProcessTopology(axes=["pipe", "data"], dims=[1, 1])
    pipe = build_model(specs, pipeline=True, stages=1, topology=topology, seed=5)
    seq = build_model(specs, pipeline=False, seed=5)
    a = [p for _, p in pipe.named_parameters()]
    b = [p for _, p in seq.named_parameters()]
    assert len(a) == len(b)
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    _randomize_zero_inits(pipe, 9)
    _randomize_zero_inits(seq, 9)
    x, t = torch.randn(2, n_tokens, cfg.in_channels), torch.tensor([0.4, 1.0])
    with torch.no_grad():
        want = seq(x, t)
        got = pipe((x, t))
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    return float(want.abs().mean())


def test_pipeline_module_matches_sequential(tmp_path):
    """build_model(pipeline=True) lays out and seeds the layers exactly as SequentialDiT does."""
    (scale,) = run_ranks(1, _pipeline_vs_sequential, tmp=tmp_path)
    assert scale > 1e-3, "the outputs compared must not be trivially zero"
