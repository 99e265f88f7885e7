"""Analytic minimum bytes a SWiPe layout sends per step, per rank and per axis.

What must leave a rank whatever the collective library does: each (token, head group) slot that attention
needs elsewhere crosses once. Counted per rank, not as a global average, because ranks differ: with SP a
rank holds a band of rows of each window, and only the bands at a WP block edge change rank in a shifted
block. Pure numpy over per-token arrays, so the paper's 720×1440 layout (WP=36 × SP=12) costs a second.

Axes: "sp" (to a rank of the same WP rank), "wp" (to another WP rank), "pp" (pipeline sends), "grad"
(gradient reduction over the weight-replica group DP·WP·SP). The router's all-to-alls count "sp" and
"wp" the same way (parallel.mappings.BYTES_SENT); tests/test_swipe_bytes.py holds them equal.

Attention traffic, in units of one slot = batch × dim/SP × element bytes:
- a route that carries q, k, v in (3 slots' width) and the output back (1): forward sends 3·S_in + S_out,
  backward sends the same all-to-alls reversed, S_in + 3·S_out (the gradient of what a rank received);
- ``halo_hidden`` (analytic only) rolls the block's hidden state instead of q, k, v: 1 in, 1 out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from deepspeed.runtime.utils import partition_balanced

from aeris_ds.config import ExperimentConfig
from aeris_ds.model.layers import sphere_position_encoding
from aeris_ds.model.swin_dit import layer_specs
from aeris_ds.parallel.layout import WindowGrid
from aeris_ds.parallel.router import WindowRouting

AXES = ("sp", "wp", "pp", "grad")
MODES = ("folded", "halo", "halo_hidden")


@dataclass(frozen=True)
class Placement:
    """WP rank and SP slice of every token (indexed by grid id) in plain or shifted windows."""

    wp: np.ndarray
    sp: np.ndarray

    @classmethod
    def of(cls, grid: WindowGrid, shifted: bool) -> Placement:
        ids = grid.window_tokens_ids(shifted)
        wp = np.empty(grid.n_tokens, dtype=np.int64)
        sp = np.empty(grid.n_tokens, dtype=np.int64)
        wp[ids] = grid.window_owner()[:, None]
        sp[ids] = (np.arange(grid.window_tokens) // (grid.window_tokens // grid.sp))[None, :]
        return cls(wp, sp)


@dataclass
class Slots:
    """Slots each window rank (wp·SP + sp) sends in one route, per axis, on the way in and on the way out."""

    into: dict[str, np.ndarray]
    out: dict[str, np.ndarray]


def _count(rank: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(rank[mask], minlength=n)


def heads_route(src: Placement, dst_wp: np.ndarray, grid: WindowGrid) -> Slots:
    """Ulysses-style route: holder (w, s) of a token's SP slots → attention ranks (dst_wp, g), head group g each.

    In: a token that changes WP rank sends all SP slots, one that stays sends SP−1 (its own group stays).
    Out: rank (w, g) returns its slot of every token of its windows to the holder, unless it is itself.
    """
    n_ranks, sp = grid.wp * grid.sp, grid.sp
    home = src.wp * sp + src.sp
    moved = src.wp != dst_wp
    into = {"wp": sp * _count(home, moved, n_ranks), "sp": (sp - 1) * _count(home, ~moved, n_ranks)}
    arriving = np.bincount(dst_wp[moved], minlength=grid.wp)
    staying = np.bincount(dst_wp[~moved], minlength=grid.wp)
    own_group = _count(dst_wp * sp + src.sp, ~moved, n_ranks)  # rank (w, g) keeps tokens of slice g
    out = {"wp": np.repeat(arriving, sp), "sp": np.repeat(staying, sp) - own_group}
    return Slots(into, out)


def tokens_route(src: Placement, dst: Placement, grid: WindowGrid) -> Slots:
    """Whole tokens (all SP slots) from holder (src.wp, src.sp) to holder (dst.wp, dst.sp), and back."""
    n_ranks, sp = grid.wp * grid.sp, grid.sp
    cross = src.wp != dst.wp
    within = ~cross & (src.sp != dst.sp)
    a, b = src.wp * sp + src.sp, dst.wp * sp + dst.sp
    into = {"wp": sp * _count(a, cross, n_ranks), "sp": sp * _count(a, within, n_ranks)}
    out = {"wp": sp * _count(b, cross, n_ranks), "sp": sp * _count(b, within, n_ranks)}
    return Slots(into, out)


def block_routes(grid: WindowGrid, shifted: bool, mode: str = "folded") -> list[tuple[Slots, int, int]]:
    """The routes of one attention block as (slots, width in, width out), widths in slots of dim/SP."""
    if mode not in MODES:
        raise ValueError(f"shift exchange mode {mode!r} is not one of {MODES}")
    plain = Placement.of(grid, shifted=False)
    if not shifted:
        return [(heads_route(plain, plain.wp, grid), 3, 1)]
    moved = Placement.of(grid, shifted=True)
    if mode == "folded":
        return [(heads_route(plain, moved.wp, grid), 3, 1)]
    roll_width = 3 if mode == "halo" else 1  # the router rolls q, k, v; a hidden-state halo rolls x
    return [(tokens_route(plain, moved, grid), roll_width, 1), (heads_route(moved, moved.wp, grid), 3, 1)]


def block_bytes(grid: WindowGrid, dim: int, shifted: bool, mode: str = "folded", batch: int = 1,
                elem: int = 4, recompute: bool = False) -> dict[str, np.ndarray]:
    """Bytes each window rank sends in one attention block, forward + backward: {"sp": [WP·SP], "wp": …}.

    ``recompute`` (activation checkpointing) runs the forward all-to-alls a second time in backward.
    """
    slot = batch * dim // grid.sp * elem
    total = {"sp": np.zeros(grid.wp * grid.sp, dtype=np.int64), "wp": np.zeros(grid.wp * grid.sp, dtype=np.int64)}
    for slots, w_in, w_out in block_routes(grid, shifted, mode):
        for axis in total:
            s_in, s_out = slots.into[axis], slots.out[axis]
            forward = w_in * s_in + w_out * s_out
            backward = w_in * s_out + w_out * s_in  # gradients of what each rank received
            total[axis] += slot * ((1 + recompute) * forward + backward)
    return total


def layer_param_counts(cfg: ExperimentConfig) -> list[int]:
    """Trainable parameters per pipeline layer (embed, blocks, head), built on the meta device: no memory."""
    wh, ww = cfg.model.window
    routing = WindowRouting(WindowGrid(wh, ww, (wh, ww)), 0, 0)  # one window: parameters do not depend on it
    position = sphere_position_encoding(np.zeros(1), np.zeros(1), cfg.model.pos_freqs)
    counts = []
    with torch.device("meta"):
        for spec in layer_specs(cfg, routing, position):
            counts.append(sum(p.numel() for p in spec.build().parameters() if p.requires_grad))
    return counts


def stage_layers(cfg: ExperimentConfig, counts: list[int]) -> list[range]:
    """Layer indices of each pipeline stage, as DeepSpeed's partition_method="parameters" cuts them."""
    parts = partition_balanced(weights=counts, num_parts=cfg.layout.pp)
    return [range(parts[s], parts[s + 1]) for s in range(cfg.layout.pp)]


def gradient_bytes(params: int, replicas: int, elem: int, zero_stage: int) -> int:
    """Bytes one rank sends to reduce its stage's gradients over ``replicas`` ranks (ring algorithms).

    All-reduce (ZeRO-0) = reduce-scatter + all-gather of the updated shards (ZeRO-1/2): 2(n−1)/n × bytes;
    ZeRO-3 gathers parameters for forward and again for backward: 3(n−1)/n.
    """
    rounds = 3 if zero_stage == 3 else 2
    return rounds * (replicas - 1) * params * elem // replicas


def pipeline_bytes(tokens: int, dim: int, batch: int, elem: int, stage: int, stages: int) -> int:
    """Bytes one rank sends per micro-batch: activations [B, T_home, D] and noise embedding [B, D] forward
    to the next stage, their gradients back to the previous one."""
    boundary = batch * (tokens + 1) * dim * elem
    return boundary * ((stage < stages - 1) + (stage > 0))


def step_bytes(cfg: ExperimentConfig, micro: int, accumulation: int = 1, elem: int = 4,
               zero_stage: int = 1, grad_elem: int | None = None) -> dict[str, np.ndarray]:
    """Bytes per optimizer step per rank: {axis: [PP, WP·SP]} (DP replicas are alike)."""
    lay = cfg.layout
    grid = WindowGrid(cfg.grid.lat, cfg.grid.lon, cfg.model.window, lay.wp, lay.sp, lay.window_assignment,
                      cfg.model.lat_mode)
    dim, recompute = cfg.model.dim, cfg.model.checkpoint_activations
    blocks = {shifted: block_bytes(grid, dim, shifted, lay.shift_exchange, micro, elem, recompute)
              for shifted in (False, True)}
    counts = layer_param_counts(cfg)
    tokens = grid.n_tokens // (lay.wp * lay.sp)
    out = {axis: np.zeros((lay.pp, lay.wp * lay.sp), dtype=np.int64) for axis in AXES}
    for stage, layers in enumerate(stage_layers(cfg, counts)):
        for i in layers:
            if 1 <= i <= cfg.model.depth:  # layer i is block i−1; odd blocks are shifted
                for axis in ("sp", "wp"):
                    out[axis][stage] += accumulation * blocks[(i - 1) % 2 == 1][axis]
        out["pp"][stage] = accumulation * pipeline_bytes(tokens, dim, micro, elem, stage, lay.pp)
        params = sum(counts[i] for i in layers)
        out["grad"][stage] = gradient_bytes(params, lay.dp * lay.wp * lay.sp, grad_elem or elem, zero_stage)
    return out


def shift_cost(grid: WindowGrid, mode: str = "folded") -> dict[str, float]:
    """Shifted vs plain block bytes (sp + wp; dim and batch cancel): over all ranks and on the busiest rank.

    NaN when the plain block sends nothing (SP = 1).
    """
    plain = sum(block_bytes(grid, grid.sp, False).values())  # dim = SP: one byte-unit per slot
    shifted = sum(block_bytes(grid, grid.sp, True, mode).values())
    return {"mean": _ratio(shifted.sum(), plain.sum()), "max": _ratio(shifted.max(), plain.max()),
            "moved_fraction": grid.moved_fraction()}


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else float("nan")
