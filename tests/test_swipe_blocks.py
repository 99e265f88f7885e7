"""One Swin block (plain and shifted windows) on WP/SP layouts equals the same block in one process.

Each rank feeds its home tokens of one random field through a block with the same random weights; the
outputs, the input gradients and the parameter gradients (summed over ranks) are compared with the
block run on the whole grid by one process. Every case of a world size runs inside one spawned job.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from ranks import run_ranks

BATCH = 2


def tiny_model():
    from aeris_ds.config import load_config

    cfg = load_config("tiny")
    return cfg, cfg.model


def swin_block(grid, wp: int, sp: int, mode: str, shifted: bool, sp_group=None, window_group=None):
    """A SwinBlock routed for rank (wp, sp), with seeded random weights (adaLN gates included, so it is no identity)."""
    from aeris_ds.model.swin_dit import SwinBlock
    from aeris_ds.parallel.router import WindowRouting

    _, m = tiny_model()
    routing = WindowRouting(grid, wp, sp, mode, sp_group, window_group)
    block = SwinBlock(m.dim, m.heads, m.hidden, routing, shifted)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    return block


def block_inputs(n_tokens: int, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hidden states [B, N, D] in grid order, noise embedding [B, D], and the output weights of the loss."""
    gen = torch.Generator().manual_seed(2)
    return (torch.randn(BATCH, n_tokens, dim, generator=gen), torch.randn(BATCH, dim, generator=gen),
            torch.randn(BATCH, n_tokens, dim, generator=gen))


def run_block(block, home: np.ndarray) -> dict:
    """Forward + backward of the block on the home tokens; loss = Σ out · w, so every output gets a gradient."""
    x_full, c, w = block_inputs(block.attn.routing.grid.n_tokens, block.norm1.normalized_shape[0])
    idx = torch.from_numpy(home)
    x = x_full[:, idx].requires_grad_()
    c = c.requires_grad_()
    out, _ = block((x, c))
    (out * w[:, idx]).sum().backward()
    return {"home": home, "out": out.detach(), "x_grad": x.grad, "c_grad": c.grad,
            "params": {k: p.grad for k, p in block.named_parameters()}}


def _cases(world: int) -> list[tuple]:
    splits = {2: [(2, 1), (1, 2)], 4: [(4, 1), (1, 4), (2, 2)]}[world]
    cases = []
    for (wp, sp), lat_mode in itertools.product(splits, ("mask", "roll")):
        for assignment in ("blocks", "round_robin") if wp > 1 else ("blocks",):
            cases.append((wp, sp, assignment, lat_mode, "folded", False))
            cases += [(wp, sp, assignment, lat_mode, mode, True) for mode in ("folded", "halo")]
    return cases


def _grid(wp: int, sp: int, assignment: str, lat_mode: str):
    from aeris_ds.parallel.layout import WindowGrid

    cfg, m = tiny_model()
    return WindowGrid(cfg.grid.lat, cfg.grid.lon, m.window, wp, sp, assignment, lat_mode)


def _blocks_on_ranks(cases: list[tuple]) -> list[dict]:
    import torch.distributed as dist

    from aeris_ds.parallel.layout import Layout
    from aeris_ds.parallel.state import init_parallel

    dist.init_process_group("gloo")
    states = {}
    results = []
    for wp, sp, assignment, lat_mode, mode, shifted in cases:
        if (wp, sp) not in states:  # every rank creates the groups in the same order
            states[(wp, sp)] = init_parallel(Layout(wp=wp, sp=sp))
        ps = states[(wp, sp)]
        grid = _grid(wp, sp, assignment, lat_mode)
        block = swin_block(grid, ps.wp, ps.sp, mode, shifted, ps.sp_group, ps.window_group)
        results.append(run_block(block, grid.home_ids(ps.wp, ps.sp)))
    return results


def _full(parts: list[tuple[np.ndarray, torch.Tensor]], n_tokens: int) -> torch.Tensor:
    """Scatter each rank's home-token rows [B, T_home, D] back into grid order [B, N, D]."""
    out = torch.full((BATCH, n_tokens, parts[0][1].shape[-1]), float("nan"))
    for home, rows in parts:
        out[:, torch.from_numpy(home)] = rows
    return out


@pytest.mark.parametrize("world", [2, 4], ids=["2ranks", "4ranks"])
def test_swipe_block_matches_single_process(world, tmp_path):
    cases = _cases(world)
    per_rank = run_ranks(world, _blocks_on_ranks, cases, tmp=tmp_path)
    for i, (wp, sp, assignment, lat_mode, mode, shifted) in enumerate(cases):
        name = f"wp={wp} sp={sp} {assignment} lat={lat_mode} {mode} {'shifted' if shifted else 'plain'}"
        single = _grid(1, 1, assignment, lat_mode)
        ref = run_block(swin_block(single, 0, 0, mode, shifted), single.home_ids(0, 0))
        got = [r[i] for r in per_rank]
        n = single.n_tokens
        for key in ("out", "x_grad"):
            _close(_full([(g["home"], g[key]) for g in got], n), _full([(ref["home"], ref[key])], n), f"{name}: {key}")
        _close(sum(g["c_grad"] for g in got), ref["c_grad"], f"{name}: noise-embedding grad")
        for key, want in ref["params"].items():
            _close(sum(g["params"][key] for g in got), want, f"{name}: grad of {key}")


def _close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    """fp32 equality up to summation order: 1e-5 of the tensor's own scale (sums over ranks reorder terms)."""
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()),
                               msg=lambda m: f"{what}: {m}")


def test_swipe_shifted_block_differs_from_plain():
    """The comparison above can fail: on one process the shift changes the block's output."""
    single = _grid(1, 1, "blocks", "mask")
    plain, shifted = (run_block(swin_block(single, 0, 0, "folded", s), single.home_ids(0, 0)) for s in (False, True))
    assert (plain["out"] - shifted["out"]).abs().max() > 1e-2


@pytest.mark.parametrize("layout,heads,depth,match", [
    ({"wp": 2}, 4, 2, "layout dp=1,pp=1,wp=2,sp=1 has 2 ranks but the world has 4"),
    ({"sp": 4}, 6, 2, "model.heads=6 is not divisible by SP=4"),
    ({"wp": 3}, 4, 2, "8 windows cannot be split evenly over WP=3 ranks"),
    ({"sp": 3}, 6, 2, "64 tokens per window cannot be split evenly over SP=3 ranks"),
    ({"pp": 4}, 4, 1, "1 blocks \\+ embed \\+ head cannot fill PP=4 stages"),
], ids=["world", "heads_sp", "windows_wp", "tokens_sp", "depth_pp"])
def test_parallel_layout_validation_errors(layout, heads, depth, match):
    from aeris_ds.parallel.layout import Layout
    from aeris_ds.parallel.state import validate_layout

    lay = Layout(**layout)
    world = 4 if match.startswith("layout") else lay.world
    with pytest.raises(ValueError, match=match):
        validate_layout(lay, world, _grid(1, 1, "blocks", "mask"), heads, depth)


def test_parallel_layout_validation_reports_every_error():
    from aeris_ds.parallel.layout import Layout
    from aeris_ds.parallel.state import validate_layout

    with pytest.raises(ValueError, match="has 3 ranks but the world has 4; model.heads=4 is not divisible by SP=3"):
        validate_layout(Layout(sp=3), 4, _grid(1, 1, "blocks", "mask"), 4, 2)
