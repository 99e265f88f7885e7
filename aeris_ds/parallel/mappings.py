"""Collectives as small autograd functions, with byte accounting.

Only one collective is needed by SWiPe's attention: an all-to-all with per-rank split sizes. Its
backward is the same all-to-all with the send and receive sizes swapped.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.distributed as dist

# Bytes this rank sent to other ranks, per axis ("sp": inside its WP rank, "wp": to another WP rank).
BYTES_SENT: dict[str, int] = defaultdict(int)


def reset_byte_counters() -> None:
    BYTES_SENT.clear()


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, send_counts, recv_counts, group, axis_of_peer):
        ctx.save = (send_counts, recv_counts, group, axis_of_peer)
        return _all_to_all(x, send_counts, recv_counts, group, axis_of_peer)

    @staticmethod
    def backward(ctx, grad):
        send_counts, recv_counts, group, axis_of_peer = ctx.save
        return _all_to_all(grad.contiguous(), recv_counts, send_counts, group, axis_of_peer), None, None, None, None


def _all_to_all(x: torch.Tensor, send_counts: list[int], recv_counts: list[int],
                group: dist.ProcessGroup, axis_of_peer: list[str]) -> torch.Tensor:
    me = dist.get_rank(group)
    row_bytes = x[0].numel() * x.element_size() if len(x) else 0
    for peer, count in enumerate(send_counts):
        if peer != me and count:
            BYTES_SENT[axis_of_peer[peer]] += count * row_bytes
    out = x.new_empty((sum(recv_counts), *x.shape[1:]))
    dist.all_to_all_single(out, x.contiguous(), recv_counts, send_counts, group=group)
    return out


@torch.compiler.disable  # a compiled block runs its collective eagerly, between two compiled graphs
def all_to_all(x: torch.Tensor, send_counts: list[int], recv_counts: list[int],
               group: dist.ProcessGroup, axis_of_peer: list[str]) -> torch.Tensor:
    """Send ``send_counts[r]`` leading rows of ``x`` to group rank r; receive ``recv_counts[r]`` from it."""
    return _AllToAll.apply(x, send_counts, recv_counts, group, axis_of_peer)
