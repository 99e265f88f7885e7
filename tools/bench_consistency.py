"""Forecast wall time per member-step: consistency sampler (1 and 2 steps) against DPM-Solver++(2S), one run.

    python tools/bench_consistency.py [--model small] [--batch 4] [--dpm-steps 10] [--repeats 5]

The same network (a preset's Swin DiT on one process, random weights: the cost does not depend on them),
the same batch of members; samplers take turns so load drift hits all alike. Baselines: 10-step
DPM-Solver++ (19 network evaluations; goal of issue 14: consistency 1-step ≥ 10× faster) and the diffusion
sampler of the preset's own ``sampler`` section (what its forecasts use).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from bench_forecast import build

from aeris_ds.config import load_config
from aeris_ds.diffusion.consistency import ConsistencySampler, consistency_sample
from aeris_ds.diffusion.sampler import SamplerConfig, sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small", help="config preset")
    parser.add_argument("--batch", type=int, default=4, help="members per step")
    parser.add_argument("--dpm-steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    net, noise, condition = build(args.model, args.batch)
    preset = load_config(args.model).sampler
    net.eval()

    def velocity(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return net(torch.cat([x_t, condition], dim=-1), t)

    samplers = {f"DPM-Solver++(2S) {args.dpm_steps} steps": (sample, SamplerConfig(steps=args.dpm_steps)),
                f"{args.model} preset ({preset.steps} levels)": (sample, preset),
                "consistency 1 step": (consistency_sample, ConsistencySampler(steps=1)),
                "consistency 2 steps": (consistency_sample, ConsistencySampler(steps=2))}
    times: dict[str, list[float]] = {name: [] for name in samplers}
    gens = [torch.Generator().manual_seed(m) for m in range(args.batch)]
    with torch.inference_mode():
        for r in range(args.repeats + 1):  # the first round warms up
            for name, (draw, cfg) in samplers.items():
                start = time.perf_counter()
                draw(velocity, noise, cfg, generator=gens)
                if r:
                    times[name].append((time.perf_counter() - start) / args.batch)
    base, own = (statistics.median(v) for v in list(times.values())[:2])
    print(f"model={args.model} members per batch={args.batch} repeats={args.repeats} "
          f"threads={torch.get_num_threads()}")
    print(f"| sampler | network evaluations | s / member-step | speed-up vs DPM {args.dpm_steps} steps | "
          "speed-up vs preset |\n|---|---|---|---|---|")
    for name, (_, cfg) in samplers.items():
        t = statistics.median(times[name])
        print(f"| {name} | {cfg.model_evaluations} | {t:.4f} | {base / t:.1f}× | {own / t:.1f}× |")


if __name__ == "__main__":
    main()
