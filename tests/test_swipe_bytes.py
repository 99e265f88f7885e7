"""Bytes the SWiPe all-to-alls send, per step, per rank and per axis, against the analytic minimum (cost.py).

Measured: mappings.BYTES_SENT as train.run logs it per step (bytes_sp, bytes_wp), and per block around
one forward + backward of a SwinBlock. Analytic: aeris_ds.perf.cost, computed per rank. Each world size
runs its training runs and block cases inside one spawned job.
"""

from __future__ import annotations

import itertools

import pytest
from ranks import run_ranks
from test_swipe_blocks import BATCH, run_block, swin_block, tiny_model

ELEM = 4  # fp32
SLACK = 1.05  # measured may exceed the minimum by at most this factor
TRAIN = {2: [{"wp": 2}, {"sp": 2}], 4: [{"wp": 2, "sp": 2}]}
BLOCKS = {2: [(2, 1), (1, 2)], 4: [(4, 1), (1, 4), (2, 2)]}
BLOCK_GRID = (32, 64)  # 4×8 windows of 8×8: WP blocks have inner edges


def _train_cases(world: int) -> list[dict]:
    return [{**lay, "shift_exchange": mode} for lay, mode in itertools.product(TRAIN[world], ("folded", "halo"))]


def _block_cases(world: int) -> list[tuple]:
    cases = []
    for wp, sp in BLOCKS[world]:
        for assignment in ("blocks", "round_robin") if wp > 1 else ("blocks",):
            cases += [(wp, sp, assignment, "folded", False), (wp, sp, assignment, "folded", True),
                      (wp, sp, assignment, "halo", True)]
    return cases


def _block_grid(wp: int, sp: int, assignment: str):
    from aeris_ds.parallel.layout import WindowGrid

    return WindowGrid(*BLOCK_GRID, tiny_model()[1].window, wp, sp, assignment)


def _measure(store: str, out: str, train_cases: list[dict], block_cases: list[tuple]) -> dict:
    import torch.distributed as dist

    from aeris_ds.config import load_config, load_ds_config
    from aeris_ds.parallel.layout import Layout
    from aeris_ds.parallel.mappings import BYTES_SENT, reset_byte_counters
    from aeris_ds.parallel.state import init_parallel
    from aeris_ds.train import run

    train = []
    for i, layout in enumerate(train_cases):
        cfg = load_config("tiny", {"data": {"store": store}, "layout": layout,
                                   "train": {"out_dir": f"{out}/{i}", "steps": 2}})
        history = run(cfg, load_ds_config(cfg.train.ds_config))["history"]
        train.append([{axis: r.get(f"bytes_{axis}", 0) for axis in ("sp", "wp")} for r in history])
    blocks, states = [], {}
    for wp, sp, assignment, mode, shifted in block_cases:
        if (wp, sp) not in states:  # every rank creates the groups in the same order
            states[(wp, sp)] = init_parallel(Layout(wp=wp, sp=sp))
        ps = states[(wp, sp)]
        grid = _block_grid(wp, sp, assignment)
        block = swin_block(grid, ps.wp, ps.sp, mode, shifted, ps.sp_group, ps.window_group)
        reset_byte_counters()
        run_block(block, grid.home_ids(ps.wp, ps.sp))
        blocks.append({axis: BYTES_SENT.get(axis, 0) for axis in ("sp", "wp")})
    return {"window_rank": dist.get_rank(), "train": train, "blocks": blocks}


@pytest.fixture(scope="module", params=[2, 4], ids=["2ranks", "4ranks"])
def measured(request, tiny_store, tmp_path_factory):
    world = request.param
    tmp = tmp_path_factory.mktemp(f"bytes{world}")
    ranks = run_ranks(world, _measure, str(tiny_store), str(tmp), _train_cases(world), _block_cases(world),
                      tmp=tmp / "ranks")
    return world, ranks


def _within(got: int, want: int, what: str) -> None:
    assert want <= got <= SLACK * want, f"{what}: measured {got} bytes, analytic minimum {want}"


def test_swipe_step_bytes_match_analytic(measured):
    from aeris_ds.config import load_config, load_ds_config
    from aeris_ds.perf.cost import step_bytes

    world, ranks = measured
    for i, layout in enumerate(_train_cases(world)):
        cfg = load_config("tiny", {"layout": layout})
        micro = load_ds_config(cfg.train.ds_config)["train_micro_batch_size_per_gpu"]
        want = step_bytes(cfg, micro, 1, ELEM)
        for r in ranks:
            for step, got in enumerate(r["train"][i]):
                for axis in ("sp", "wp"):
                    _within(got[axis], int(want[axis][0, r["window_rank"]]),
                            f"{layout} rank {r['window_rank']} step {step} axis {axis}")
        assert sum(want["sp"][0]) + sum(want["wp"][0]) > 0, f"{layout}: the case must move bytes to test anything"


def test_swipe_block_bytes_match_analytic(measured):
    from aeris_ds.perf.cost import block_bytes

    world, ranks = measured
    dim = tiny_model()[1].dim
    for i, (wp, sp, assignment, mode, shifted) in enumerate(_block_cases(world)):
        want = block_bytes(_block_grid(wp, sp, assignment), dim, shifted, mode, BATCH, ELEM)
        for r in ranks:
            for axis in ("sp", "wp"):
                _within(r["blocks"][i][axis], int(want[axis][r["window_rank"]]),
                        f"wp={wp} sp={sp} {assignment} {mode} shifted={shifted} rank {r['window_rank']} {axis}")


def test_swipe_folded_shift_moves_no_more_than_halo(measured):
    world, ranks = measured
    cases = _train_cases(world)
    for i, layout in enumerate(cases):
        if layout["shift_exchange"] != "folded":
            continue
        halo = cases.index({**layout, "shift_exchange": "halo"})
        for r in ranks:
            folded, halo_bytes = sum(r["train"][i][0].values()), sum(r["train"][halo][0].values())
            assert folded <= halo_bytes, f"{layout} rank {r['window_rank']}: folded {folded} > halo {halo_bytes}"


def test_ulysses_plain_block_on_wp_moves_nothing(measured):
    """Plain windows are whole on their WP rank: without SP a plain block sends no byte at all."""
    world, ranks = measured
    plain_wp = [i for i, (wp, sp, _, _, shifted) in enumerate(_block_cases(world)) if sp == 1 and not shifted]
    shifted_wp = [i for i, (wp, sp, _, _, shifted) in enumerate(_block_cases(world)) if sp == 1 and shifted]
    assert plain_wp and shifted_wp
    for r in ranks:
        assert all(r["blocks"][i] == {"sp": 0, "wp": 0} for i in plain_wp), r["blocks"]
        assert all(r["blocks"][i]["wp"] > 0 for i in shifted_wp), "the shifted block on WP must cross WP ranks"


@pytest.mark.parametrize("assignment,moved", [("blocks", 0.18), ("round_robin", 0.75)])
def test_swipe_cost_at_paper_layout(assignment, moved):
    """720×1440, 30×30 windows, WP=36, SP=12: over all ranks the shifted block sends (1−f)(SP−1)/SP + f of a
    token's slots against (SP−1)/SP for the plain one (DESIGN §3), with f = WindowGrid.moved_fraction()."""
    from aeris_ds.parallel.layout import WindowGrid
    from aeris_ds.perf.cost import shift_cost

    sp = 12
    grid = WindowGrid(720, 1440, (30, 30), 36, sp, assignment)
    cost = shift_cost(grid)
    f = cost["moved_fraction"]
    assert f == pytest.approx(moved, abs=0.005)
    assert cost["mean"] == pytest.approx(((1 - f) * (sp - 1) / sp + f) / ((sp - 1) / sp), rel=1e-12)
    assert cost["max"] >= cost["mean"]
    if assignment == "blocks":
        assert cost["max"] <= 1.05, "contiguous blocks: the shifted block costs at most 5% more than the plain one"
