"""Routes are permutations: their backward is a gather with the inverse index, never a scatter-add, and an
identity route costs nothing. Checked by recording the aten ops that forward and backward dispatch."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from aeris_ds.config import load_config
from aeris_ds.model.swin_dit import SwinBlock
from aeris_ds.parallel.layout import WindowGrid
from aeris_ds.parallel.router import Permutation, WindowRouting

SCATTERS = ("index_add", "scatter", "index_put")


class OpRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def _block(shifted: bool) -> tuple[SwinBlock, torch.Tensor, torch.Tensor]:
    cfg = load_config("tiny")
    m = cfg.model
    grid = WindowGrid(cfg.grid.lat, cfg.grid.lon, m.window)
    torch.manual_seed(0)
    block = SwinBlock(m.dim, m.heads, m.hidden, WindowRouting(grid, 0, 0), shifted)
    x = torch.randn(2, grid.n_tokens, m.dim, requires_grad=True)
    return block, x, torch.randn(2, m.dim)


def _ops_of_block(shifted: bool) -> tuple[list[str], list[str]]:
    block, x, c = _block(shifted)
    with OpRecorder() as fwd:
        out, _ = block((x, c))
    with OpRecorder() as bwd:
        out.square().sum().backward()
    return fwd.ops, bwd.ops


def test_shifted_block_backward_has_no_scatter_add():
    fwd, bwd = _ops_of_block(shifted=True)
    assert "index_select" in fwd, "the shifted block must route its tokens (a gather)"
    assert not [op for op in bwd if op.startswith(SCATTERS)], f"scatter in the backward: {sorted(set(bwd))}"
    assert "index_select" in bwd, "the route's adjoint must be a gather"


def test_identity_route_is_skipped():
    """With one rank the plain block's tokens already sit in window order: no gather at all."""
    fwd, bwd = _ops_of_block(shifted=False)
    assert "index_select" not in fwd + bwd


def test_permutation_gathers_match_indexing_and_its_adjoint():
    """A route between [B, rows, F] and [rows, B, F] (around an all-to-all) against plain indexing."""
    gen = torch.Generator().manual_seed(0)
    index = torch.randperm(10, generator=gen)
    perm = Permutation(index)
    x = torch.randn(3, 10, 4, generator=gen, requires_grad=True)
    w = torch.randn(10, 3, 4, generator=gen)
    with OpRecorder() as rec:
        out = perm(x, 1, 0)
        (out * w).sum().backward()
    torch.testing.assert_close(out, x.detach()[:, index].transpose(0, 1), rtol=0, atol=0)
    torch.testing.assert_close(x.grad, w[torch.argsort(index)].transpose(0, 1), rtol=0, atol=0)
    assert not [op for op in rec.ops if op.startswith(SCATTERS)]
    round_trip = perm.inverted()(perm(x.detach(), 1, 0), 0, 1)
    torch.testing.assert_close(round_trip, x.detach(), rtol=0, atol=0)
