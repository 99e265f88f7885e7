"""A performance model of SWiPe training: step time of a config on a layout and a machine.

    step = (m + p − 1) · t_micro + t_grad + overhead   (1F1B: the bubble is (p − 1)/(m + p − 1) of the step)
    t_micro = compute + Ulysses/shift all-to-alls + pipeline sends   (one micro-batch, one stage)
    compute = hardware FLOPs of the stage's share ÷ (peak × efficiency)
    t_grad  = reduce-scatter + all-gather (ZeRO-1) or all-reduce of the stage's gradients over DP·WP·SP

Collectives are charged on the link they use: ranks are ordered pipe outermost, then dp, wp, sp innermost
(Layout.coords), so a group of consecutive ranks that fits in a node talks over the intra-node link, else
over the node's NICs shared by its devices. Nothing is overlapped with compute (DeepSpeed's pipeline
engine reduces gradients after the last micro-batch; the all-to-alls sit between matmuls).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from aeris_ds.config import ExperimentConfig
from aeris_ds.parallel.layout import WindowGrid
from aeris_ds.perf.flops import PEAKS, MemoryEstimate, cpu_gemm_rate, memory_per_rank, parameter_counts, step_flops


@dataclass(frozen=True)
class Link:
    bandwidth: float  # bytes/s one device can send at once (a node's NICs divided by its devices)
    latency: float  # seconds per message


@dataclass(frozen=True)
class Machine:
    name: str
    device: str  # key of flops.PEAKS, or "cpu"
    devices_per_node: int
    intra: Link
    inter: Link
    peak: dict[str, float]  # FLOP/s per device by dtype
    memory: float  # bytes per device
    efficiency: float = 0.35  # achieved fraction of peak on the model's matmuls
    overhead: float = 0.0  # seconds per step not in FLOPs or bytes (optimizer, data, framework)
    assumptions: tuple[str, ...] = field(default_factory=tuple)


def _gpu(name: str, device: str, per_node: int, intra: Link, inter: Link, notes: tuple[str, ...]) -> Machine:
    p = PEAKS[device]
    return Machine(name, device, per_node, intra, inter, {"bf16": p["bf16"], "fp32": p["fp32"]}, p["memory"],
                   assumptions=notes)


GB = 1e9
AURORA = _gpu(
    "aurora", "max1550_tile", 12, Link(100 * GB, 5e-6), Link(8 * 25 * GB / 12, 10e-6),
    ("device peak 419.4 TF bf16 per tile = half of Intel's 838.9 TF for a Max 1550 at 1.6 GHz (Aurora may "
     "clock lower: the fitted efficiency absorbs it)",
     "intra-node 100 GB/s per tile: Xe-Link, 16 links × ~26 GB/s per GPU shared by 2 tiles, rounded down",
     "inter-node 200 GB/s per node: 8 Slingshot-11 NICs × 25 GB/s, shared by 12 tiles; latency 10 µs (CCL)"),
)
LUMI = _gpu(
    "lumi", "mi250x_gcd", 8, Link(50 * GB, 5e-6), Link(4 * 25 * GB / 8, 10e-6),
    ("device peak 191.5 TF bf16 per GCD = half of AMD's 383 TF per MI250X",
     "intra-node 50 GB/s per GCD: Infinity Fabric, 1–4 links of 50 GB/s between GCD pairs",
     "inter-node 100 GB/s per node: 4 Slingshot-11 NICs × 25 GB/s, shared by 8 GCDs"),
)
H100 = _gpu(
    "h100", "h100", 8, Link(450 * GB, 3e-6), Link(50 * GB, 5e-6),
    ("device peak 989 TF bf16 dense (H100 SXM)", "intra-node 450 GB/s per GPU one way (NVLink 4, 900 GB/s bidir)",
     "inter-node 50 GB/s per GPU: one 400 Gb/s InfiniBand NIC per GPU"),
)
CALIBRATION = Path(__file__).resolve().parents[2] / "results" / "sweep_cpu" / "calibration.json"


def cpu_machine(calibration: Path | None = CALIBRATION) -> Machine:
    """This machine: one core per rank, gloo over shared memory; efficiency/overhead from a calibration file."""
    cores = os.cpu_count() or 1
    cal = json.loads(calibration.read_text()) if calibration is not None and calibration.exists() else {}
    peak = cal.get("peak") or {"fp32": cpu_gemm_rate("fp32"), "bf16": cpu_gemm_rate("bf16")}
    notes = ("device = one core; peak = this machine's measured 1-thread GEMM rate (fp32 and bf16)",
             "gloo over shared memory: 1 GB/s, 50 µs per message (assumed, not measured)",
             "efficiency and per-step overhead fitted to 1-rank local runs" if cal else "uncalibrated defaults")
    link = Link(1 * GB, 50e-6)
    return Machine("cpu", "cpu", cores, link, link, peak, 8 * GB, cal.get("efficiency", 0.5),
                   cal.get("overhead", 0.0), notes)


MACHINES = {"aurora": AURORA, "lumi": LUMI, "h100": H100}


def get_machine(name: str) -> Machine:
    if name == "cpu":
        return cpu_machine()
    if name not in MACHINES:
        raise ValueError(f"unknown machine {name!r} (known: {', '.join([*MACHINES, 'cpu'])})")
    return MACHINES[name]


@dataclass(frozen=True)
class Run:
    """How a config is run: the ds_config settings the model needs."""

    micro_batch: int = 1
    accumulation: int = 1
    zero_stage: int = 1
    bf16: bool = True


def moved_fraction(cfg: ExperimentConfig) -> float:
    """Fraction f of tokens whose shifted window lies on another WP rank.

    Blocks of br × bc windows: a token stays if neither its half-window row nor column crosses a block edge,
    (1 − 1/(2·br))·(1 − 1/(2·bc)), an axis with a single block (cyclic) always staying. Round-robin windows
    use the exact count of WindowGrid.moved_fraction.
    """
    lay = cfg.layout
    if lay.wp == 1:
        return 0.0
    grid = WindowGrid(cfg.grid.lat, cfg.grid.lon, cfg.model.window, lay.wp, 1, lay.window_assignment,
                      cfg.model.lat_mode)
    if lay.window_assignment != "blocks":
        return _exact_moved(grid)
    rows, cols = grid.windows_shape
    br, bc = grid.block_shape
    stay_r = 1.0 if br == rows else 1 - 1 / (2 * br)
    stay_c = 1.0 if bc == cols else 1 - 1 / (2 * bc)
    return 1 - stay_r * stay_c


@lru_cache(maxsize=64)
def _exact_moved(grid: WindowGrid) -> float:
    return grid.moved_fraction()


@dataclass(frozen=True)
class Prediction:
    times: dict[str, float]  # seconds per step by cause (sums to the step): compute, sp, wp, pp, overhead, bubble, grad
    bytes_per_rank: dict[str, float]  # bytes one rank sends per step: sp, wp, pp, grad
    bubble: float  # (p − 1)/(m + p − 1)
    samples_per_step: int
    model_flops_per_step: float
    devices: int
    memory: MemoryEstimate
    capacity: float

    @property
    def step_time(self) -> float:
        return sum(self.times.values())

    @property
    def flops_per_s(self) -> float:
        """Model FLOP/s of the whole job (what MFU and the paper's EF figures count)."""
        return self.model_flops_per_step / self.step_time

    @property
    def samples_per_s(self) -> float:
        return self.samples_per_step / self.step_time

    @property
    def fits(self) -> bool:
        return self.memory.total <= self.capacity

    def breakdown(self) -> dict[str, float]:
        """Share of the step by cause."""
        return {k: v / self.step_time for k, v in self.times.items()}


def bubble_fraction(stages: int, micro_batches: int) -> float:
    """Idle share of a 1F1B step: (p − 1)/(m + p − 1)."""
    return (stages - 1) / (micro_batches + stages - 1)


def _spans(group: int, per_node: float) -> bool:
    """Whether consecutive ranks of this size leave a node."""
    return group > per_node or int(per_node) % group != 0


def attention_bytes(cfg: ExperimentConfig, bytes_per_element: int, passes: int) -> dict[str, float]:
    """Bytes one rank sends over SP and WP peers in all-to-alls, per micro-batch, for its stage's blocks.

    Per home token and attention pass, Ulysses sends q, k, v (3·D) in and the output (D) back, of which
    (SP−1)/SP leaves the rank. In a shifted block a fraction f of tokens goes to another WP rank whole:
    folded: (1 − f)(SP−1)/SP over SP and f over WP; halo: a separate roll of f, then the full Ulysses share.
    ``passes``: forward, backward and, under activation checkpointing, the recomputed forward.
    """
    lay = cfg.layout
    tokens = cfg.grid.lat * cfg.grid.lon / (lay.wp * lay.sp)
    per_pass = tokens * 4 * cfg.model.dim * bytes_per_element
    blocks = cfg.model.depth / lay.pp
    shifted, plain = blocks / 2, blocks / 2
    ulysses = (lay.sp - 1) / lay.sp
    f = moved_fraction(cfg)
    if lay.shift_exchange == "folded":
        sp_share = plain * ulysses + shifted * (1 - f) * ulysses
    else:
        sp_share = blocks * ulysses
    return {"sp": passes * per_pass * sp_share, "wp": passes * per_pass * shifted * f}


def _all_to_all_time(nbytes: float, peers: int, link: Link, messages: float) -> float:
    return nbytes / link.bandwidth + messages * (peers - 1) * link.latency if peers > 1 else 0.0


def predict(cfg: ExperimentConfig, machine: Machine, run: Run = Run(), nodes: int | None = None) -> Prediction:
    """Step time, communication, bubble and memory of ``cfg`` on ``cfg.layout`` over ``machine``.

    ``nodes`` defaults to the fewest that hold the layout at one rank per device.
    """
    lay = cfg.layout
    dtype = "bf16" if run.bf16 else "fp32"
    elem = 2 if run.bf16 else 4
    recompute = cfg.model.checkpoint_activations
    passes = 3 if recompute else 2
    world = lay.dp * lay.pp * lay.wp * lay.sp
    nodes = nodes or math.ceil(world / machine.devices_per_node)
    per_node = world / nodes  # ranks per node
    share = max(1.0, per_node / machine.devices_per_node)  # more ranks than devices (CPU cores) time-share them

    split = lay.wp * lay.sp * lay.pp
    hw_flops = step_flops(cfg, recompute=recompute) * run.micro_batch / split
    compute = share * hw_flops / (machine.peak[dtype] * machine.efficiency)

    link = {True: machine.inter, False: machine.intra}
    a2a = attention_bytes(cfg, elem, passes)
    a2a = {k: v * run.micro_batch for k, v in a2a.items()}
    blocks = cfg.model.depth / lay.pp
    t_sp = _all_to_all_time(a2a["sp"], lay.sp, link[_spans(lay.sp, per_node)], passes * 2 * blocks)
    t_wp = _all_to_all_time(a2a["wp"], lay.wp * lay.sp, link[_spans(lay.wp * lay.sp, per_node)],
                            passes * blocks)
    tokens = cfg.grid.lat * cfg.grid.lon / (lay.wp * lay.sp) * run.micro_batch
    pp_bytes = 2 * tokens * cfg.model.dim * elem if lay.pp > 1 else 0.0  # activation forward, its gradient back
    pp_link = link[lay.dp * lay.wp * lay.sp >= per_node]
    t_pp = pp_bytes / pp_link.bandwidth + 2 * pp_link.latency if lay.pp > 1 else 0.0
    t_micro = compute + t_sp + t_wp + t_pp

    m = run.accumulation
    bubble = bubble_fraction(lay.pp, m)
    counts = parameter_counts(cfg)
    stage_params = math.ceil(cfg.model.depth / lay.pp) * counts["block"] + max(counts["embed"], counts["head"])
    r = lay.dp * lay.wp * lay.sp
    grad_bytes = 2 * (r - 1) / r * stage_params * elem  # ring reduce-scatter + all-gather, or all-reduce
    grad_link = link[_spans(r, per_node)]
    t_grad = grad_bytes / grad_link.bandwidth + 2 * math.log2(r) * grad_link.latency if r > 1 else 0.0

    per_micro = {"compute": compute, "sp": t_sp, "wp": t_wp, "pp": t_pp}
    times = {k: m * v for k, v in per_micro.items()}
    times["bubble"] = (lay.pp - 1) * t_micro
    times["grad"] = t_grad
    times["overhead"] = machine.overhead
    mem = memory_per_rank(cfg, run.micro_batch, run.zero_stage, run.bf16, run.accumulation)
    samples = run.micro_batch * m * lay.dp
    return Prediction(
        times=times,
        bytes_per_rank={"sp": m * a2a["sp"], "wp": m * a2a["wp"], "pp": m * pp_bytes, "grad": grad_bytes},
        bubble=bubble, samples_per_step=samples, model_flops_per_step=step_flops(cfg) * samples, devices=world,
        memory=mem, capacity=machine.memory,
    )


def with_layout(cfg: ExperimentConfig, **layout: int | str) -> ExperimentConfig:
    """The config with other layout values (the config is frozen)."""
    return cfg.model_copy(update={"layout": cfg.layout.model_copy(update=layout)})


def fit_efficiency(cfg: ExperimentConfig, machine: Machine, run: Run, target_flops_per_s: float) -> Machine:
    """The machine with the one efficiency that makes ``predict`` reach a measured FLOP/s (bisection)."""
    lo, hi = 1e-4, 1.0
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        got = predict(cfg, replace(machine, efficiency=mid), run).flops_per_s
        lo, hi = (mid, hi) if got < target_flops_per_s else (lo, mid)
    eff = math.sqrt(lo * hi)
    if eff > 0.999:
        raise ValueError(f"{target_flops_per_s:.3g} FLOP/s is out of reach of {machine.name} even at full peak")
    return replace(machine, efficiency=eff)


def _linear_terms(cfg: ExperimentConfig, machine: Machine, run: Run, nodes: int) -> tuple[float, float, float]:
    """(c0, c1, c2) with step time = c0 + c1/efficiency + c2·overhead: the model is linear in both."""
    base = predict(cfg, replace(machine, efficiency=1.0, overhead=0.0), run, nodes).step_time
    half = predict(cfg, replace(machine, efficiency=0.5, overhead=0.0), run, nodes).step_time
    over = predict(cfg, replace(machine, efficiency=1.0, overhead=1.0), run, nodes).step_time
    c1 = half - base
    return base - c1, c1, over - base


def calibrate(records: list[dict], machine: Machine, fit: list[bool]) -> tuple[Machine, list[float]]:
    """Fit efficiency and per-step overhead to measured step times (least squares over ``fit``).

    Returns the calibrated machine and each record's relative error (predicted / measured − 1).
    """
    import numpy as np

    rows, times = [], []
    for r in records:
        cfg = ExperimentConfig(**r["config"])
        run = Run(r["micro_batch"], r["accumulation"], r["zero_stage"], r["precision"] == "bf16")
        rows.append((_linear_terms(cfg, machine, run, 1), cfg, run))
        times.append(r["step_time_s"])
    a = np.array([[c1, c2] for (c0, c1, c2), *_ in rows])
    b = np.array([t - c0 for t, ((c0, _, _), *_) in zip(times, rows, strict=True)])
    mask = np.array(fit)
    if mask.sum() < 2:
        raise ValueError(f"calibration needs at least 2 fit runs, got {int(mask.sum())}")
    (inv_eff, overhead), *_ = np.linalg.lstsq(a[mask], b[mask], rcond=None)
    fitted = replace(machine, efficiency=float(1 / inv_eff), overhead=float(max(overhead, 0.0)))
    errors = [predict(cfg, fitted, run, 1).step_time / t - 1 for (_, cfg, run), t in zip(rows, times, strict=True)]
    return fitted, errors


# The paper's Aurora figures (arXiv:2509.13523) and the scaling experiments we assume behind them.
PAPER = {"sustained": 10.21e18, "peak": 11.21e18, "weak": 0.955, "strong": 0.816, "nodes": 10080}


def aurora_headline(ds_accumulation: int = 40) -> dict:
    """Fit Aurora's efficiency to the sustained 10.21 EF of the 40B model, predict the other figures.

    Layout WP=36 × PP=20 × SP=12 × DP=14 on 10,080 nodes, micro-batch 1, ``ds_accumulation`` micro-batches
    per step (ds_configs/aeris_40b_aurora.json), ZeRO-1, bf16, activation checkpointing (preset).
    Weak scaling: DP=1 (720 nodes) → DP=14 at the same micro-batches per replica. Strong scaling: the same
    global batch (14 × accumulation samples) on DP=1 → DP=14.
    """
    from aeris_ds.config import load_config

    cfg = with_layout(load_config("aeris-40b"), dp=14)
    run = Run(1, ds_accumulation, 1, True)
    nodes = PAPER["nodes"]
    machine = fit_efficiency(cfg, AURORA, run, PAPER["sustained"])
    full = predict(cfg, machine, run, nodes)
    one = with_layout(cfg, dp=1)
    weak_base = predict(one, machine, run, nodes // 14)
    strong_base = predict(one, machine, Run(1, 14 * ds_accumulation, 1, True), nodes // 14)
    per_node = full.flops_per_s / nodes
    return {
        "machine": machine, "prediction": full, "run": run,
        "sustained": full.flops_per_s,
        "weak": per_node / (weak_base.flops_per_s / (nodes // 14)),
        "strong": per_node / (strong_base.flops_per_s / (nodes // 14)),
        "mfu": full.flops_per_s / (full.devices * machine.peak["bf16"]),
        "moved_fraction": moved_fraction(cfg),
    }
