"""Building blocks of the Swin DiT: SwiGLU, 2D axial RoPE, noise-level and position encodings."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class AxialRoPE2D(nn.Module):
    """Rotary embedding of a token's (row, col) inside its window: half the head dims rotate with the row,
    half with the column, so q·k depends only on the 2D offset between the tokens."""

    def __init__(self, head_dim: int, positions: np.ndarray, base: float = 100.0):
        super().__init__()
        quarter = head_dim // 4
        inv_freq = base ** (-torch.arange(quarter, dtype=torch.float64) / quarter)
        pos = torch.as_tensor(positions, dtype=torch.float64)  # [T, 2]
        angles = torch.cat([pos[:, :1] * inv_freq, pos[:, 1:] * inv_freq], dim=-1)  # [T, head_dim/2]
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., T, head_dim] with T the window's tokens in row-major order."""
        x1, x2 = x.float().chunk(2, dim=-1)
        out = torch.cat([x1 * self.cos - x2 * self.sin, x1 * self.sin + x2 * self.cos], dim=-1)
        return out.to(x.dtype)


class NoiseEmbedding(nn.Module):
    """Diffusion time t ∈ [0, π/2] → one shared conditioning vector (Fourier features + MLP)."""

    def __init__(self, dim: int, n_freqs: int):
        super().__init__()
        self.register_buffer("freqs", torch.logspace(0, 3, n_freqs), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * n_freqs, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t.float()[:, None] * self.freqs
        feats = torch.cat([angles.sin(), angles.cos()], dim=-1).to(self.mlp[0].weight.dtype)
        return self.mlp(feats)


def sphere_position_encoding(lat_deg: np.ndarray, lon_deg: np.ndarray, n_freqs: int) -> torch.Tensor:
    """2D sinusoidal encoding of grid positions, periodic in longitude: [tokens, 4·n_freqs]."""
    lat, lon = np.deg2rad(lat_deg)[:, None], np.deg2rad(lon_deg)[:, None]
    k = np.arange(1, n_freqs + 1)[None, :]
    feats = [np.sin(k * lat), np.cos(k * lat), np.sin(k * lon), np.cos(k * lon)]
    return torch.from_numpy(np.concatenate(feats, axis=1).astype(np.float32))


def init_zero(module: nn.Linear) -> nn.Linear:
    nn.init.zeros_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
    return module


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: per-sample shift/scale of a normalised [B, T, D] tensor (one fused multiply-add)."""
    return torch.addcmul(shift[:, None], x, 1 + scale[:, None])
