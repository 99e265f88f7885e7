"""Rank the SWiPe layouts of a model on N nodes of a machine by predicted throughput.

    aeris-ds plan --model 40b --nodes 10080 --machine aurora [--global-batch 560] [--top 5]

Candidates: SP divides the heads and the window's tokens and stays inside a node (its all-to-alls run
once per attention layer), WP cuts the window grid into equal blocks, PP ≤ depth, DP takes the rest.
ZeRO-1 with a pipeline (DeepSpeed refuses 2/3 there), else the lowest stage that fits. Each micro-batch
size is tried; accumulation comes from ``--global-batch`` or, without it, is 4·PP (bubble ≤ 20 %).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from aeris_ds.args import ArgumentParser, config_ref, int_between, positive_int
from aeris_ds.config import ExperimentConfig, config_path, load_config
from aeris_ds.errors import ConfigError, LayoutError, MissingPathError, run_command
from aeris_ds.parallel.layout import WindowGrid
from aeris_ds.perf.flops import GiB
from aeris_ds.perf.model import MACHINES, Machine, Prediction, Run, get_machine, predict, with_layout

MAX_NODES = 100_000  # ten times the largest machine: a plan beyond it is a typo, and its search would not end


@dataclass(frozen=True)
class Option:
    cfg: ExperimentConfig  # with the layout set
    run: Run
    prediction: Prediction
    mfu: float

    def ds_config(self) -> dict:
        """The DeepSpeed settings this option needs (merge into a ds_config)."""
        lay = self.cfg.layout
        return {"train_micro_batch_size_per_gpu": self.run.micro_batch,
                "gradient_accumulation_steps": self.run.accumulation,
                "train_batch_size": self.run.micro_batch * self.run.accumulation * lay.dp * lay.wp * lay.sp,
                "zero_optimization": {"stage": self.run.zero_stage}, "bf16": {"enabled": self.run.bf16}}


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]  # O(√n): --nodes may be large
    return sorted({*small, *(n // d for d in small)})


def candidate_layouts(cfg: ExperimentConfig, world: int, per_node: int) -> list[dict[str, int]]:
    m = cfg.model
    tokens = m.window[0] * m.window[1]
    out = []
    for sp in _divisors(min(m.heads, per_node)):
        if m.heads % sp or tokens % sp or per_node % sp:
            continue
        for wp in _divisors(world // sp):
            try:
                WindowGrid(cfg.grid.lat, cfg.grid.lon, m.window, wp, sp, cfg.layout.window_assignment, m.lat_mode)
            except ValueError:
                continue
            for pp in _divisors(world // (sp * wp)):
                if pp <= m.depth:
                    out.append({"dp": world // (sp * wp * pp), "pp": pp, "wp": wp, "sp": sp})
    return out


def plan(model_cfg: ExperimentConfig, nodes: int, machine: Machine | str, global_batch: int | None = None,
         micro_batches: tuple[int, ...] = (1, 2, 4), bf16: bool = True) -> list[Option]:
    """Every layout of ``nodes`` × the machine's devices that fits memory, fastest first (samples/s)."""
    machine = get_machine(machine) if isinstance(machine, str) else machine
    if nodes < 1:
        raise ConfigError(f"nodes must be ≥ 1, got {nodes}")
    world = nodes * machine.devices_per_node
    dtype = "bf16" if bf16 else "fp32"
    options, smallest = [], None
    for layout in candidate_layouts(model_cfg, world, machine.devices_per_node):
        cfg = with_layout(model_cfg, **layout)
        stages = (1,) if layout["pp"] > 1 else (1, 2, 3)
        for micro in micro_batches:
            if global_batch is None:
                acc = 4 * layout["pp"]
            elif global_batch % (layout["dp"] * micro):
                continue
            else:
                acc = global_batch // (layout["dp"] * micro)
            for stage in stages:
                run = Run(micro, acc, stage, bf16)
                p = predict(cfg, machine, run, nodes)
                if smallest is None or p.memory.total < smallest[1].memory.total:
                    smallest = (cfg, p, run)
                if p.fits:
                    mfu = p.flops_per_s / (p.devices * machine.peak[dtype])
                    options.append(Option(cfg, run, p, mfu))
                    break  # the lowest ZeRO stage that fits
    if not options:
        if smallest is None:
            raise LayoutError(f"no layout of {world} devices ({nodes} nodes × {machine.devices_per_node}) suits "
                             f"{model_cfg.name}: heads {model_cfg.model.heads}, window {model_cfg.model.window}, "
                             f"grid {model_cfg.grid.lat}×{model_cfg.grid.lon}"
                             + (f", global batch {global_batch}" if global_batch else ""))
        cfg, p, run = smallest
        raise LayoutError(f"{model_cfg.name} does not fit on {nodes} {machine.name} nodes: the smallest footprint, "
                         f"layout {cfg.layout.as_layout()} with ZeRO-{run.zero_stage} and micro-batch "
                         f"{run.micro_batch}, needs {p.memory.describe()} per device, over the "
                         f"{machine.memory / GiB:.0f} GiB of a {machine.device}")
    return sorted(options, key=lambda o: -o.prediction.samples_per_s)


def model_ref(name: str) -> str:
    """``40b`` → the ``aeris-40b`` preset; any preset name or YAML path otherwise (an argparse ``type=``)."""
    for ref in (name, f"aeris-{name}"):
        try:
            config_path(ref)
            return ref
        except MissingPathError:
            pass
    return config_ref(name)  # raises, naming what was given


def format_options(options: list[Option], machine: Machine, top: int) -> str:
    lines = [f"{'layout':<28} {'samples/s':>10} {'PF/s':>9} {'MFU':>5} {'step s':>8} {'bubble':>6} "
             f"{'GiB/dev':>8}  ds_config"]
    for o in options[:top]:
        p = o.prediction
        ds = o.ds_config()
        settings = (f"micro {ds['train_micro_batch_size_per_gpu']}, accumulation {ds['gradient_accumulation_steps']}"
                    f", ZeRO-{o.run.zero_stage}, train_batch_size {ds['train_batch_size']}")
        lines.append(f"{str(o.cfg.layout.as_layout()):<28} {p.samples_per_s:>10.3g} {p.flops_per_s / 1e15:>9.4g} "
                     f"{o.mfu:>5.2f} {p.step_time:>8.3g} {p.bubble:>6.2f} {p.memory.total / GiB:>8.1f}  {settings}")
    lines.append(f"({len(options)} layouts fit; {machine.name}: {machine.devices_per_node} × {machine.device} per "
                 f"node, {machine.memory / GiB:.0f} GiB each, efficiency {machine.efficiency:.2f} of peak)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="aeris-ds plan", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=model_ref, help="preset (40b, 1.3b, small…) or YAML path")
    parser.add_argument("--nodes", type=int_between(1, MAX_NODES), required=True)
    parser.add_argument("--machine", default="aurora", choices=[*MACHINES, "cpu"])
    parser.add_argument("--global-batch", type=positive_int, default=None,
                        help="distinct samples per optimizer step (a multiple of DP × micro-batch)")
    parser.add_argument("--fp32", action="store_true", help="plan for fp32 instead of bf16")
    parser.add_argument("--top", type=positive_int, default=5)
    args = parser.parse_args(argv)
    machine = get_machine(args.machine)
    cfg = load_config(args.model)
    options = plan(cfg, args.nodes, machine, args.global_batch, bf16=not args.fp32)
    print(f"{cfg.name} on {args.nodes} {machine.name} nodes ({args.nodes * machine.devices_per_node} devices):")
    print(format_options(options, machine, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command(main))
