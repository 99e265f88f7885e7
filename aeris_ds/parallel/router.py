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


class _Take(torch.autograd.Function):
    """Rows ``index`` of ``x`` along ``dim_in``, placed along ``dim_out`` of the result (dims 0 and 1 of a
    [rows, B, F] or [B, rows, F] tensor). For a permutation the adjoint is the same gather with the inverse
    index — not the scatter-add (index_add_) that autograd uses for index_select."""

    @staticmethod
    def forward(ctx, x, index, inverse, dim_in, dim_out):
        ctx.save_for_backward(inverse)
        ctx.dims = dim_in, dim_out
        return _take(x, index, dim_in, dim_out)

    @staticmethod
    def backward(ctx, grad):
        (inverse,) = ctx.saved_tensors
        dim_in, dim_out = ctx.dims
        return _take(grad, inverse, dim_out, dim_in), None, None, None, None


def _take(x: torch.Tensor, index: torch.Tensor, dim_in: int, dim_out: int) -> torch.Tensor:
    # One pass: index_select reads the (transposed) source and writes a contiguous result.
    return (x if dim_in == dim_out else x.transpose(0, 1)).index_select(dim_out, index)


class Permutation:
    """A reordering of rows, applied as a gather; the index lives on each device it is used on, copied once."""

    def __init__(self, index: torch.Tensor):
        if not torch.equal(torch.sort(index).values, torch.arange(len(index))):
            raise RuntimeError("a route must be a permutation of the rows")
        self.index, self.inverse = index, torch.argsort(index)
        self.is_identity = torch.equal(index, torch.arange(len(index)))
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, x: torch.Tensor, dim_in: int = 1, dim_out: int = 1) -> torch.Tensor:
        if self.is_identity and dim_in == dim_out:
            return x
        if x.device not in self._on:
            self._on[x.device] = self.index.to(x.device), self.inverse.to(x.device)
        return _Take.apply(x, *self._on[x.device], dim_in, dim_out)

    def then(self, other: Permutation) -> Permutation:
        """This permutation followed by ``other``, as one gather."""
        return Permutation(self.index[other.index])

    def inverted(self) -> Permutation:
        return Permutation(self.inverse)


@dataclass
class RoutePlan:
    """Rows of [B, rows, F]: gather the rows to send, all-to-all them, put the received rows in order.

    A plan that sends nothing to other ranks is one local permutation (none at all when it is the identity).
    """

    send: Permutation  # rows of the source, in send order (grouped by peer)
    send_counts: list[int]
    recv_counts: list[int]
    recv: Permutation  # rows of the receive buffer, in destination order
    group: dist.ProcessGroup | None  # None: nothing leaves this rank
    axis_of_peer: list[str]

    def __post_init__(self) -> None:
        if self.group is None and not self.recv.is_identity:
            self.send, self.recv = self.send.then(self.recv), Permutation(torch.arange(len(self.recv.index)))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.group is None:
            return self.send(x)
        # The all-to-all moves whole rows, so rows go outermost for it: [B, rows, F] → [rows, B, F] → back.
        x = all_to_all(self.send(x, 1, 0), self.send_counts, self.recv_counts, self.group, self.axis_of_peer)
        return self.recv(x, 0, 1)

    def reversed(self) -> RoutePlan:
        """The route back: the inverse permutations, with send and receive sizes swapped."""
        return RoutePlan(self.recv.inverted(), self.recv_counts, self.send_counts, self.send.inverted(),
                         self.group, self.axis_of_peer)


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
    return RoutePlan(Permutation(torch.from_numpy(send_index)), send_counts.tolist(), recv_counts.tolist(),
                     Permutation(torch.from_numpy(recv_perm)), group if len(peers) > 1 else None, axis)


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
        """[B, T_home·SP, F] (a row per token and head group) → [B, T_attn, F]: whole windows, this rank's heads."""
        return self._apply(self.enter[shifted], x)

    def from_attention(self, x: torch.Tensor, shifted: bool) -> torch.Tensor:
        """[B, T_attn, F] → [B, T_home·SP, F]."""
        return self._apply(self.leave[shifted], x)

    def _apply(self, steps: list[tuple[RoutePlan, str]], x: torch.Tensor) -> torch.Tensor:
        B, _, F = x.shape
        for plan, moves in steps:
            x = plan(x if moves == "heads" else x.reshape(B, -1, self.sp * F)).reshape(B, -1, F)
        return x


def _as_tensor(mask: np.ndarray | None) -> torch.Tensor | None:
    return None if mask is None else torch.from_numpy(mask)
