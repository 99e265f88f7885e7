"""The pixel-level Swin diffusion transformer of AERIS as a flat list of DeepSpeed LayerSpecs.

embed → N Swin blocks (plain and shifted windows alternating) → head. Every layer takes and returns one
tuple, so the same specs build a ``deepspeed.pipe.PipelineModule`` or a plain sequential module. Between
layers a rank holds only its home tokens ``x [B, T_home, D]`` and the shared noise embedding ``c [B, D]``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from deepspeed.pipe import LayerSpec, PipelineModule
from torch import nn
from torch.utils.checkpoint import checkpoint

from aeris_ds.config import ExperimentConfig
from aeris_ds.grid import grid_latitudes, grid_longitudes
from aeris_ds.model.layers import (
    AxialRoPE2D,
    NoiseEmbedding,
    SwiGLU,
    init_zero,
    modulate,
    sphere_position_encoding,
)
from aeris_ds.parallel.layout import WindowGrid
from aeris_ds.parallel.router import WindowRouting

Activations = tuple[torch.Tensor, torch.Tensor]


class Embed(nn.Module):
    """Per token: [noisy tendency, state, forcings] + 2D position encoding → D; noise level t → c."""

    def __init__(self, in_channels: int, dim: int, noise_freqs: int, position: torch.Tensor):
        super().__init__()
        self.register_buffer("position", position, persistent=False)  # [T_home, P]
        self.proj = nn.Linear(in_channels + position.shape[1], dim)
        self.noise = NoiseEmbedding(dim, noise_freqs)

    def forward(self, inputs: Activations) -> Activations:
        x, t = inputs
        pos = self.position.to(x.dtype).expand(x.shape[0], -1, -1)
        return self.proj(torch.cat([x, pos], dim=-1)), self.noise(t)


class WindowAttention(nn.Module):
    """Multi-head attention inside (shifted) windows, the tokens routed to and from whole windows."""

    def __init__(self, dim: int, heads: int, routing: WindowRouting, shifted: bool):
        super().__init__()
        self.heads, self.head_dim, self.shifted, self.routing = heads, dim // heads, shifted, routing
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.rope = AxialRoPE2D(self.head_dim, routing.grid.window_positions())
        mask = routing.masks[shifted]
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        sp, hd = self.routing.sp, self.head_dim
        hs, n = self.heads // sp, self.routing.grid.window_tokens
        # A row per (token, head group), features (q/k/v, head, dim); a view when SP = 1.
        qkv = self.qkv(x).view(B, T, 3, sp, hs * hd).transpose(2, 3).reshape(B, T * sp, 3 * hs * hd)
        a = self.routing.to_attention(qkv, self.shifted)  # [B, T_attn, 3·hs·hd]: whole windows, my heads
        nw = a.shape[1] // n
        a = a.view(B * nw, n, 3 * hs, hd).transpose(1, 2)  # [B·nw, (q/k/v, head), n, hd], a view
        q, k = self.rope(a[:, : 2 * hs]).split(hs, dim=1)  # RoPE on q and k at once
        mask = None if self.mask is None else self.mask.repeat(B, 1, 1)[:, None]
        o = F.scaled_dot_product_attention(q, k, a[:, 2 * hs :], attn_mask=mask)
        o = self.routing.from_attention(o.transpose(1, 2).reshape(B, nw * n, hs * hd), self.shifted)
        return self.proj(o.reshape(B, T, sp * hs * hd))


class SwinBlock(nn.Module):
    """pre-RMSNorm → window attention → residual; pre-RMSNorm → SwiGLU → residual; adaLN-Zero modulation."""

    def __init__(self, dim: int, heads: int, hidden: int, routing: WindowRouting, shifted: bool,
                 checkpointed: bool = False):
        super().__init__()
        self.norm1 = nn.RMSNorm(dim, elementwise_affine=False)
        self.attn = WindowAttention(dim, heads, routing, shifted)
        self.norm2 = nn.RMSNorm(dim, elementwise_affine=False)
        self.mlp = SwiGLU(dim, hidden)
        self.ada = init_zero(nn.Linear(dim, 6 * dim))
        self.checkpointed = checkpointed

    def forward(self, inputs: Activations) -> Activations:
        x, c = inputs
        if self.checkpointed and torch.is_grad_enabled():
            return checkpoint(self._forward, x, c, use_reentrant=False), c
        return self._forward(x, c), c

    def _forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(F.silu(c)).chunk(6, dim=-1)
        x = torch.addcmul(x, gate1[:, None], self.attn(modulate(self.norm1(x), shift1, scale1)))
        return torch.addcmul(x, gate2[:, None], self.mlp(modulate(self.norm2(x), shift2, scale2)))


class Head(nn.Module):
    """Final modulated norm + linear to the predicted velocity; zero-initialised."""

    def __init__(self, dim: int, out_channels: int):
        super().__init__()
        self.norm = nn.RMSNorm(dim, elementwise_affine=False)
        self.ada = init_zero(nn.Linear(dim, 2 * dim))
        self.out = init_zero(nn.Linear(dim, out_channels))

    def forward(self, inputs: Activations) -> torch.Tensor:
        x, c = inputs
        shift, scale = self.ada(F.silu(c)).chunk(2, dim=-1)
        return self.out(modulate(self.norm(x), shift, scale))


def layer_specs(cfg: ExperimentConfig, routing: WindowRouting, position: torch.Tensor) -> list[LayerSpec]:
    """The whole network as LayerSpecs: the unit the pipeline cuts into stages."""
    m = cfg.model
    specs = [LayerSpec(Embed, cfg.in_channels, m.dim, m.noise_freqs, position)]
    specs += [LayerSpec(SwinBlock, m.dim, m.heads, m.hidden, routing, i % 2 == 1, m.checkpoint_activations)
              for i in range(m.depth)]
    specs.append(LayerSpec(Head, m.dim, cfg.data.n_channels))
    return specs


class SequentialDiT(nn.Module):
    """The same layers without a pipeline (ZeRO-2/3, inference): forward(x, t) → velocity.

    Layer i is built under seed ``seed + i``, exactly as the PipelineModule builds it on whichever stage
    holds it, so every layout starts from the same weights.
    """

    def __init__(self, specs: list[LayerSpec], seed: int = 0):
        super().__init__()
        layers = []
        for i, spec in enumerate(specs):
            torch.manual_seed(seed + i)
            layers.append(spec.build())
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = (x, t)
        for layer in self.layers:
            out = layer(out)
        return out


def build_model(specs: list[LayerSpec], pipeline: bool, stages: int = 1, topology=None, loss_fn=None,
                seed: int = 0) -> nn.Module:
    """A PipelineModule (pipeline engine, ZeRO ≤ 1) or the sequential module (any ZeRO) from the same specs."""
    if pipeline:
        return PipelineModule(layers=specs, num_stages=stages, topology=topology, loss_fn=loss_fn,
                              partition_method="parameters", seed_layers=True, seed_fn=torch.manual_seed,
                              base_seed=seed)
    return SequentialDiT(specs, seed)


def position_encoding(lat: np.ndarray, lon: np.ndarray, home_ids: np.ndarray, n_freqs: int) -> torch.Tensor:
    """Encoding of this rank's home tokens, from the store's own coordinates."""
    rows, cols = np.divmod(home_ids, len(lon))
    return sphere_position_encoding(lat[rows], lon[cols], n_freqs)


def single_process_model(cfg: ExperimentConfig, lat: np.ndarray | None = None, lon: np.ndarray | None = None,
                         seed: int = 0) -> tuple[SequentialDiT, WindowRouting]:
    """The whole network on one rank (WP = SP = 1) and its token order, for forecasts, FLOP counts and benchmarks.

    ``lat``/``lon`` are the store's coordinates; an equiangular grid without pole rows when not given.
    """
    grid = WindowGrid(cfg.grid.lat, cfg.grid.lon, cfg.model.window, assignment=cfg.layout.window_assignment,
                      lat_mode=cfg.model.lat_mode)
    routing = WindowRouting(grid, 0, 0, cfg.layout.shift_exchange)
    lat = grid_latitudes(cfg.grid.lat) if lat is None else lat
    lon = grid_longitudes(cfg.grid.lon) if lon is None else lon
    position = position_encoding(lat, lon, routing.home_ids, cfg.model.pos_freqs)
    return SequentialDiT(layer_specs(cfg, routing, position), seed), routing
