"""Analytic FLOPs, parameter and memory counts of the Swin DiT, and accelerator peak rates.

Counts are matmul FLOPs (2·m·n·k), the convention of ``torch.utils.flop_counter`` and of MFU: bias
adds, norms, RoPE and activations are left out. Everything is per *distinct* sample (one whole
lat × lon field); a rank of a WP × SP group does 1/(WP·SP) of it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from aeris_ds.config import ExperimentConfig

GiB = 2**30


@dataclass(frozen=True)
class ForwardFlops:
    """Forward matmul FLOPs of one sample, by part."""

    embed: float  # input projection (channels + position encoding → dim) and the noise MLP
    blocks: float  # all Swin blocks: qkv, scores, values, out proj, SwiGLU, adaLN
    attention: float  # of which the score and value matmuls (no weights: not doubled for weight grads)
    head: float
    first_layer: float  # matmuls whose input needs no gradient (embed proj, first noise layer)

    @property
    def total(self) -> float:
        return self.embed + self.blocks + self.head


def forward_flops(cfg: ExperimentConfig) -> ForwardFlops:
    """Matmul FLOPs of one forward pass over one whole sample."""
    m = cfg.model
    n, d, h = cfg.grid.lat * cfg.grid.lon, m.dim, m.hidden
    t = m.window[0] * m.window[1]
    proj_in = 2 * n * (cfg.in_channels + 4 * m.pos_freqs) * d
    noise_in = 2 * (2 * m.noise_freqs) * d
    embed = proj_in + noise_in + 2 * d * d  # noise MLP: Fourier features → dim → dim
    attention = 2 * (2 * n * t * d)  # q·kᵀ and p·v over each token's window, all heads
    block = 2 * n * d * (3 * d + d) + attention + 2 * n * d * (3 * h) + 2 * d * 6 * d  # qkv+proj, SwiGLU, adaLN
    head = 2 * d * 2 * d + 2 * n * d * cfg.data.n_channels
    return ForwardFlops(embed, m.depth * block, m.depth * attention, head, proj_in + noise_in)


def step_flops(cfg: ExperimentConfig, recompute: bool = False) -> float:
    """Training FLOPs per distinct sample (forward + backward).

    Backward is twice the forward (input and weight gradients), except the first layers, whose inputs
    need no gradient (1×). ``recompute=True`` adds the blocks' second forward under activation
    checkpointing: hardware FLOPs; MFU uses the model FLOPs (False).
    """
    f = forward_flops(cfg)
    total = 3 * f.total - f.first_layer
    return total + (f.blocks if recompute else 0.0)


def parameter_counts(cfg: ExperimentConfig) -> dict[str, int]:
    """Parameters of the embed, of one block and of the head (weights and biases)."""
    m = cfg.model
    d, h = m.dim, m.hidden
    embed = (cfg.in_channels + 4 * m.pos_freqs + 1) * d + (2 * m.noise_freqs + 1) * d + (d + 1) * d
    block = 4 * d * d + 3 * d * h + (d + 1) * 6 * d
    head = (d + 1) * 2 * d + (d + 1) * cfg.data.n_channels
    return {"embed": embed, "block": block, "head": head, "total": embed + m.depth * block + head}


def activation_bytes_per_token_block(dim: int, hidden: int, dtype_bytes: int = 2) -> float:
    """Bytes autograd keeps per token per Swin block for backward (no checkpointing).

    Saved tensors, in model dtype: block input, two norms and two modulations (5·D), qkv (3D), RoPE'd q, k
    in fp32 (4D in bf16 units), attention output (D), routed copies of qkv and of the output (4D), the
    gated residuals (2D), SwiGLU gate/up (2H), silu(gate) and product (2H): 19·D + 4·H elements. At
    D=1536, H=4096 in bf16 that is ~91 KB, against ~100 KB measured on an H200 (DESIGN §6).
    """
    return (19 * dim + 4 * hidden) * dtype_bytes


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes on the busiest rank (pipeline stage 0 holds the most micro-batches in flight)."""

    weights: float
    grads: float
    optimizer: float
    activations: float

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer + self.activations

    def describe(self) -> str:
        parts = ", ".join(f"{k} {getattr(self, k) / GiB:.2f}" for k in ("weights", "grads", "optimizer", "activations"))
        return f"{self.total / GiB:.2f} GiB ({parts})"


def memory_per_rank(cfg: ExperimentConfig, micro_batch: int = 1, zero_stage: int = 1, bf16: bool = True,
                    accumulation: int = 1, checkpoint: bool | None = None) -> MemoryEstimate:
    """Weights, gradients, Adam states and activations of the busiest rank of ``cfg.layout``.

    bf16 follows DeepSpeed: bf16 weights and gradients plus fp32 master weights, Adam m and v (12 B per
    parameter of optimizer state); fp32 keeps 4 B weights and gradients and 8 B of Adam state. ZeRO-1
    shards the optimizer state over the replica group DP·WP·SP, ZeRO-2 also the gradients, ZeRO-3 also
    the weights. Activations: 1F1B keeps min(PP, accumulation) micro-batches in flight on stage 0.
    """
    lay = cfg.layout
    counts = parameter_counts(cfg)
    blocks_per_stage = -(-cfg.model.depth // lay.pp)
    params = blocks_per_stage * counts["block"] + max(counts["embed"], counts["head"])
    replica = lay.dp * lay.wp * lay.sp
    wbytes = 2 if bf16 else 4
    weights = params * wbytes / (replica if zero_stage >= 3 else 1)
    grads = params * wbytes / (replica if zero_stage >= 2 else 1)
    optimizer = params * (12 if bf16 else 8) / (replica if zero_stage >= 1 else 1)
    tokens = micro_batch * cfg.grid.lat * cfg.grid.lon / (lay.wp * lay.sp)
    per_block = activation_bytes_per_token_block(cfg.model.dim, cfg.model.hidden, wbytes)
    ckpt = cfg.model.checkpoint_activations if checkpoint is None else checkpoint
    in_flight = min(lay.pp, accumulation) if lay.pp > 1 else 1
    if ckpt:  # only each block's input is kept; one block's activations live during its recompute
        acts = tokens * (in_flight * blocks_per_stage * cfg.model.dim * wbytes + per_block)
    else:
        acts = tokens * in_flight * blocks_per_stage * per_block
    return MemoryEstimate(weights, grads, optimizer, acts)


# Dense peak FLOP/s per device (the unit one rank drives) and memory per device. Vendor figures:
# H100/H200 SXM 989 TF bf16 tensor, 67 TF fp32 (no TF32); MI250X 383 TF bf16 / 95.7 TF fp32 matrix per
# package = 2 GCDs; Intel Max 1550 838.9 TF bf16 XMX and 52.4 TF fp32 per GPU = 2 tiles, 128 GB HBM.
PEAKS: dict[str, dict[str, float]] = {
    "h100": {"bf16": 989e12, "fp32": 67e12, "memory": 80e9},
    "h200": {"bf16": 989e12, "fp32": 67e12, "memory": 141e9},
    "mi250x_gcd": {"bf16": 191.5e12, "fp32": 47.9e12, "memory": 64e9},
    "max1550_tile": {"bf16": 419.4e12, "fp32": 26.2e12, "memory": 64e9},
}


def peak_flops(device_kind: str, dtype: str | torch.dtype = "bf16") -> float:
    """Peak FLOP/s of one device for MFU; ``cpu`` measures this machine's GEMM rate (one thread)."""
    name = {torch.bfloat16: "bf16", torch.float32: "fp32"}.get(dtype, dtype) if isinstance(dtype, torch.dtype) \
        else str(dtype).replace("float32", "fp32").replace("bfloat16", "bf16")
    if name not in ("bf16", "fp32"):
        raise ValueError(f"no peak for dtype {dtype!r}: use bf16 or fp32")
    kind = device_kind.lower()
    if kind == "cpu":
        return cpu_gemm_rate(name)
    if kind not in PEAKS:
        raise ValueError(f"unknown device kind {device_kind!r} (known: cpu, {', '.join(PEAKS)})")
    return PEAKS[kind][name]


_CPU_RATE: dict[str, float] = {}


def native_bf16() -> bool:
    """Whether this rank's device computes bf16 natively: on the CPU, bf16 dot products in hardware (AVX512-BF16
    or AMX; without them bf16 runs emulated, slower than fp32); on an accelerator, what DeepSpeed's says."""
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator()
    if accelerator.device_name() != "cpu":
        return bool(accelerator.is_bf16_supported())
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.exists() else ""
    return "amx_bf16" in flags or "avx512_bf16" in flags


def cpu_gemm_rate(dtype: str = "fp32", size: int = 1024, seconds: float = 1.0) -> float:
    """FLOP/s of a square matmul on this CPU with the current thread count (measured once per process)."""
    if dtype not in _CPU_RATE:
        torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
        a = torch.randn(size, size, dtype=torch_dtype)
        b = torch.randn(size, size, dtype=torch_dtype)
        a @ b  # warm-up: first call pays allocation and kernel selection
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds or n < 2:
            a @ b
            n += 1
        _CPU_RATE[dtype] = 2 * size**3 * n / elapsed
    return _CPU_RATE[dtype]
