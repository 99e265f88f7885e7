"""Token routing between a rank's home tokens and the whole (shifted) windows its attention needs.

One mechanism serves every block and every layout: a *route plan* gathers the rows to send, runs one
all-to-all with per-peer sizes, and puts the received rows in window order. For a plain block with SP
ranks this is exactly Ulysses (sequence-split → head-split); for a shifted block the same all-to-all,
over the WP × SP group, delivers tokens straight into the shifted windows — the shift's re-layout is
folded into the all-to-all attention performs anyway (SWiPe). With WP = SP = 1 the plan is a local
permutation: the cyclic roll of a single process. The ``halo`` mode is the baseline for measurement:
a separate roll exchange of the hidden states, then a plain Ulysses all-to-all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from aeris_ds.parallel.layout import WindowGrid
from aeris_ds.parallel.mappings import all_to_all


@dataclass
class RoutePlan:
    send_index: torch.Tensor  # rows of the source, in send order (grouped by peer)
    send_counts: list[int]
    recv_counts: list[int]
    recv_perm: torch.Tensor  # rows of the receive buffer, in destination order
    group: dist.ProcessGroup | None  # None: nothing leaves this rank
    axis_of_peer: list[str]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.index_select(0, self.send_index.to(x.device))
        if self.group is not None:
            x = all_to_all(x, self.send_counts, self.recv_counts, self.group, self.axis_of_peer)
        return x.index_select(0, self.recv_perm.to(x.device))

    def reversed(self) -> RoutePlan:
        """The route back: the adjoint permutation, with send and receive sizes swapped."""
        return RoutePlan(
            torch.argsort(self.recv_perm), self.recv_counts, self.send_counts,
            torch.argsort(self.send_index), self.group, self.axis_of_peer,
        )


@dataclass(frozen=True)
class Placement:
    """Where every token sits: the holder's index and the position in the holder's list."""

    owner: np.ndarray
    pos: np.ndarray

    @classmethod
    def from_lists(cls, lists: list[np.ndarray], n_tokens: int) -> Placement:
        owner = np.full(n_tokens, -1, dtype=np.int64)
        pos = np.full(n_tokens, -1, dtype=np.int64)
        for i, ids in enumerate(lists):
            owner[ids] = i
            pos[ids] = np.arange(len(ids))
        return cls(owner, pos)


def build_plan(src: Placement, dst: Placement, split: int, me: int, peers: list[int],
               group: dist.ProcessGroup | None, wp_of: np.ndarray) -> RoutePlan:
    """Route rows ``token·split + g`` of rank ``me`` (a source holder) to destination ``dst.owner·split + g``.

    ``split`` > 1 is the head split of Ulysses: destination holder b serves ranks b·split … b·split+split−1,
    each for its own head group g. ``peers`` are the ranks of the collective, in group-rank order.
    """
    peer_index = np.full(len(wp_of), -1, dtype=np.int64)
    peer_index[peers] = np.arange(len(peers))

    mine = np.flatnonzero(src.owner == me)
    mine = mine[np.argsort(src.pos[mine])]
    g = np.repeat(np.arange(split)[None, :], len(mine), axis=0).reshape(-1)
    tok = np.repeat(mine, split)
    dest = peer_index[dst.owner[tok] * split + g]
    order = np.lexsort((dst.pos[tok], dest))
    send_index = (src.pos[tok] * split + g)[order]
    send_counts = np.bincount(dest, minlength=len(peers))

    incoming = np.flatnonzero(dst.owner == me // split)
    source = peer_index[src.owner[incoming]]
    order = np.lexsort((dst.pos[incoming], source))
    recv_perm = np.argsort(dst.pos[incoming][order])
    recv_counts = np.bincount(source, minlength=len(peers))

    if (dest < 0).any() or (source < 0).any():
        raise RuntimeError("route plan needs a peer outside its process group")
    axis = ["sp" if wp_of[p] == wp_of[me] else "wp" for p in peers]
    return RoutePlan(torch.from_numpy(send_index), send_counts.tolist(), recv_counts.tolist(),
                     torch.from_numpy(recv_perm), group if len(peers) > 1 else None, axis)


class WindowRouting:
    """The plans one rank needs for plain and shifted attention blocks, built once and shared by all blocks."""

    def __init__(self, grid: WindowGrid, wp: int, sp: int, mode: str = "folded",
                 sp_group: dist.ProcessGroup | None = None, window_group: dist.ProcessGroup | None = None):
        if mode not in ("folded", "halo"):
            raise ValueError(f"shift exchange mode {mode!r} is not 'folded' or 'halo'")
        self.grid, self.mode, self.sp = grid, mode, grid.sp
        me = wp * grid.sp + sp
        ranks = [(w, s) for w in range(grid.wp) for s in range(grid.sp)]
        wp_of = np.array([w for w, _ in ranks])
        window_peers = list(range(len(ranks)))
        sp_peers = [wp * grid.sp + s for s in range(grid.sp)]
        n = grid.n_tokens

        home = Placement.from_lists([grid.home_ids(w, s) for w, s in ranks], n)
        self.home_ids = grid.home_ids(wp, sp)

        def attention(shifted: bool) -> Placement:
            return Placement.from_lists([grid.attention_ids(w, shifted).reshape(-1) for w in range(grid.wp)], n)

        # Each step is (plan, moves): "heads" plans move (token, head group) rows, "tokens" plans whole tokens.
        plain = build_plan(home, attention(False), grid.sp, me, sp_peers, sp_group, wp_of)
        self.enter = {False: [(plain, "heads")]}
        if mode == "folded":
            folded = build_plan(home, attention(True), grid.sp, me, window_peers, window_group, wp_of)
            self.enter[True] = [(folded, "heads")]
        else:
            per = grid.window_tokens // grid.sp
            rolled = Placement.from_lists(
                [grid.attention_ids(w, True)[:, s * per:(s + 1) * per].reshape(-1) for w, s in ranks], n)
            self.enter[True] = [
                (build_plan(home, rolled, 1, me, window_peers, window_group, wp_of), "tokens"),
                (build_plan(rolled, attention(True), grid.sp, me, sp_peers, sp_group, wp_of), "heads"),
            ]
        self.leave = {k: [(p.reversed(), m) for p, m in reversed(v)] for k, v in self.enter.items()}
        self.masks = {k: _as_tensor(grid.attention_mask(wp, k)) for k in (False, True)}

    def to_attention(self, x: torch.Tensor, shifted: bool) -> torch.Tensor:
        """[T_home, SP, B, F] (row per token, one slot per head group) → [T_attn, B, F] of this rank's heads."""
        return self._apply(self.enter[shifted], x)

    def from_attention(self, x: torch.Tensor, shifted: bool) -> torch.Tensor:
        """[T_attn, B, F] → [T_home, SP, B, F]."""
        return self._apply(self.leave[shifted], x).reshape(-1, self.sp, *x.shape[-2:])

    def _apply(self, steps: list[tuple[RoutePlan, str]], x: torch.Tensor) -> torch.Tensor:
        for plan, moves in steps:
            rows = x.reshape(-1, *x.shape[-2:]) if moves == "heads" else x.reshape(-1, self.sp, *x.shape[-2:])
            x = plan(rows)
        return x


def _as_tensor(mask: np.ndarray | None) -> torch.Tensor | None:
    return None if mask is None else torch.from_numpy(mask)
