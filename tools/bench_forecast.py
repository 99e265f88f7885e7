"""Forecast-path overheads in one run: the sampler beyond its network evaluations, and the store.

    python tools/bench_forecast.py [--model conv|small|<preset>] [--batch 4] [--steps 10]

Rows, all measured here and reported as ratios (machines differ; DESIGN §6):
- machine GEMM rate, fp32 and bf16 (the reference the model timings are relative to);
- network forward passes of one batch per second, alone and inside the sampler;
- sampler overhead = (sampler wall time − time inside the network) / time inside the network (goal < 10 %);
- zarr write throughput of ForecastStore.write and of a full rollout step (slab + resume state +
  progress mark) against raw numpy → zarr region writes of the same arrays, chunks and codec.
``--model conv`` is a small built-in conv net; a preset name builds the real Swin DiT on one process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr
from torch import Tensor, nn

from aeris_ds.diffusion.sampler import SamplerConfig, sample
from aeris_ds.forecast import ForecastStore, rollout

ATMOSPHERIC = ["geopotential", "temperature", "u_component_of_wind", "v_component_of_wind",
               "specific_humidity"]
SURFACE = ["2m_temperature", "10m_u_component_of_wind", "10m_v_component_of_wind", "mean_sea_level_pressure"]
LEVELS = [50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000]


def gemm_rate(dtype: torch.dtype, n: int = 1024, repeats: int = 5) -> float:
    """FLOP/s of an n³ matmul on this machine (median after a warm-up)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


class ConvVelocity(nn.Module):
    """A small conv v-predictor on [B, C, H, W]: [x_t, condition, t] → v."""

    def __init__(self, channels: int, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(2 * channels + 1, width, 3, padding=1), nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1), nn.GELU(),
            nn.Conv2d(width, channels, 3, padding=1),
        )

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        time_plane = t[:, None, None, None].expand(-1, 1, *x.shape[2:]).to(x.dtype)
        return self.net(torch.cat([x, time_plane], dim=1))


def build(model: str, batch: int) -> tuple[nn.Module, Tensor, Tensor]:
    """(network taking (inputs, t), the noisy-target part of an input batch, the condition part)."""
    if model == "conv":
        channels = 14
        net = ConvVelocity(channels)
        return net, torch.randn(batch, channels, 32, 64), torch.randn(batch, channels, 32, 64)
    from aeris_ds.config import load_config
    from aeris_ds.model.swin_dit import single_process_model

    cfg = load_config(model)
    net, _ = single_process_model(cfg, seed=cfg.train.seed)
    out, tokens = cfg.data.n_channels, cfg.grid.lat * cfg.grid.lon
    return net, torch.randn(batch, tokens, out), torch.randn(batch, tokens, cfg.in_channels - out)


def bench_sampler(model: str, batch: int, steps: int, repeats: int) -> dict[str, float]:
    net, target, condition = build(model, batch)
    net.eval()
    channel_dim = 1 if model == "conv" else -1
    inside = [0.0]

    def velocity(x_t: Tensor, t: Tensor) -> Tensor:
        start = time.perf_counter()
        v = net(torch.cat([x_t, condition], dim=channel_dim), t)
        inside[0] += time.perf_counter() - start
        return v

    cfg = SamplerConfig(steps=steps)
    t = torch.full((batch,), 0.7)
    forwards, walls, insides = [], [], []
    with torch.inference_mode():
        sample(velocity, target, cfg)  # warm-up
        for _ in range(repeats):  # interleaved, so load drift hits both alike
            start = time.perf_counter()
            for _ in range(cfg.model_evaluations):
                velocity(target, t)
            forwards.append((time.perf_counter() - start) / cfg.model_evaluations)
            inside[0] = 0.0
            start = time.perf_counter()
            sample(velocity, target, cfg)
            walls.append(time.perf_counter() - start)
            insides.append(inside[0])
    forward, sampler = statistics.median(forwards), statistics.median(walls)
    return {
        "forward_s": forward,
        "sampler_s": sampler,
        "evals": cfg.model_evaluations,
        "forward_per_s": 1.0 / forward,
        "sampler_evals_per_s": cfg.model_evaluations / sampler,
        "overhead": statistics.median((w - i) / i for w, i in zip(walls, insides)),
    }


def bench_compiled(model: str, batch: int, steps: int, repeats: int, weights: str | None,
                   freezing: bool) -> dict[str, float]:
    """Seconds per member-step (one sampler call ÷ its rows), eager against the same network with each Swin block
    through torch.compile (as forecasts with train.compile run; ``freezing``: inductor's weights-as-constants),
    interleaved in one run; each first call's seconds (compiled: a cold cache); the largest difference."""
    import copy

    import torch._inductor.config as inductor

    from aeris_ds.model.compiled import compile_blocks
    from aeris_ds.weights import load_into, load_weights

    net, target, condition = build(model, batch)
    if weights:  # trained weights: the compared outputs are a real forecast's (the untrained head is zero)
        load_into(net, load_weights(weights)["ema"])
    variants = {"eager": (net.eval(), {}), "compiled": (copy.deepcopy(net), {"freezing": freezing})}
    cfg = SamplerConfig(steps=steps)
    out: dict[str, float] = {}
    results, seconds = {}, {name: [] for name in variants}

    def solve(module: nn.Module) -> Tensor:
        return sample(lambda x, t: module(torch.cat([x, condition], -1), t), target, cfg,
                      generator=torch.Generator().manual_seed(0))

    with torch.no_grad():  # as in the rollout
        for name, (module, options) in variants.items():
            if name != "eager":
                compile_blocks(module)
            with inductor.patch(options):
                start = time.perf_counter()
                results[name] = solve(module)
                out[f"{name}_first_s"] = time.perf_counter() - start
        for _ in range(repeats):
            for name, (module, options) in variants.items():
                with inductor.patch(options):
                    start = time.perf_counter()
                    solve(module)
                    seconds[name].append((time.perf_counter() - start) / batch)
    for name in variants:
        out[f"{name}_s"] = statistics.median(seconds[name])
        out[f"{name}_diff"] = float((results[name] - results["eager"]).abs().max())
    out["scale"] = float(results["eager"].abs().max())
    return out


def bench_store(grid: tuple[int, int], members: int, leads: int, repeats: int,
                root: Path) -> dict[str, float]:
    """MB/s of raw zarr region writes, ForecastStore.write and rollout steps, same slabs and chunks.

    The three writers take turns ``repeats`` times, each into a fresh store; medians are reported.
    """
    rng = np.random.default_rng(0)
    fields = {name: rng.standard_normal((members, len(LEVELS), *grid), dtype=np.float32)
              for name in ATMOSPHERIC}
    fields |= {name: rng.standard_normal((members, *grid), dtype=np.float32) for name in SURFACE}
    nbytes = leads * sum(a.nbytes for a in fields.values())
    lat, lon = np.linspace(-90, 90, grid[0]), np.arange(grid[1]) * 360.0 / grid[1]
    variables = {name: LEVELS for name in ATMOSPHERIC} | {name: None for name in SURFACE}
    inits = np.array(["2020-01-01"], dtype="datetime64[ns]")
    lead_times = np.arange(1, leads + 1) * np.timedelta64(6, "h")
    # A rollout whose "model" is free: the state is the physical fields themselves (stacked).
    order, sizes = list(fields), [a.shape[1] if a.ndim == 4 else 1 for a in fields.values()]
    state = torch.from_numpy(np.concatenate([a.reshape(members, -1, *grid) for a in fields.values()], axis=1))

    def to_physical(x: Tensor) -> dict[str, np.ndarray]:
        parts = torch.split(x, sizes, dim=1)
        return {name: (p if name in ATMOSPHERIC else p[:, 0]).numpy() for name, p in zip(order, parts)}

    def raw(path: Path) -> float:
        group = zarr.open_group(path, mode="w", zarr_format=2)
        arrays = {name: group.create_array(name, shape=(1, leads, *a.shape), chunks=(1, 1, 1, *a.shape[1:]),
                                           dtype="float32", fill_value=np.nan) for name, a in fields.items()}
        start = time.perf_counter()
        for k in range(leads):
            for m in range(members):
                for name, a in fields.items():
                    arrays[name][0, k, m] = a[m]
        return time.perf_counter() - start

    def store(path: Path) -> float:
        store = ForecastStore.create(path, inits, lead_times, members, variables, lat, lon)
        start = time.perf_counter()
        for k in range(leads):
            for m in range(members):
                store.write(0, k, m, {name: a[m] for name, a in fields.items()})
        return time.perf_counter() - start

    def rolled(path: Path) -> float:
        store = ForecastStore.create(path, inits, lead_times, members, variables, lat, lon)
        start = time.perf_counter()
        rollout(lambda x, gens, valid: x.clone(), state, leads, store, [(0, m) for m in range(members)],
                to_physical, 0,
                progress=False)
        return time.perf_counter() - start

    times: dict[str, list[float]] = {"raw": [], "store": [], "rollout": []}
    for r in range(repeats):
        for name, writer in (("raw", raw), ("store", store), ("rollout", rolled)):
            times[name].append(writer(root / f"{name}{r}.zarr"))
    return {"MB": nbytes / 1e6} | {f"{k}_MBps": nbytes / statistics.median(v) / 1e6 for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="conv", help="conv, or a config preset (e.g. small)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10, help="sampler noise levels (AERIS: 10)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--grid", type=int, nargs=2, default=[121, 240], help="store grid (lat lon)")
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--leads", type=int, default=4)
    parser.add_argument("--compiled", action="store_true",
                        help="time only the sampler per member-step, eager vs torch.compile'd Swin blocks")
    parser.add_argument("--weights", default=None, help="weights.pt for --compiled (outputs to compare)")
    parser.add_argument("--freezing", action="store_true", help="--compiled with inductor's freezing")
    args = parser.parse_args()
    if args.compiled:
        with tempfile.TemporaryDirectory() as cache:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # cold, as on a fresh clone
            c = bench_compiled(args.model, args.batch, args.steps, args.repeats, args.weights, args.freezing)
        print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; model={args.model} batch={args.batch}, "
              f"{args.steps} levels = {SamplerConfig(steps=args.steps).model_evaluations} evals per member-step; "
              f"freezing {args.freezing}")
        for name in ("eager", "compiled"):
            print(f"{name:<9} {c[f'{name}_s'] * 1e3:8.1f} ms per member-step  ×{c['eager_s'] / c[f'{name}_s']:.2f}  "
                  f"first call {c[f'{name}_first_s']:6.1f} s  max |Δ| vs eager {c[f'{name}_diff']:.2e} "
                  f"(outputs up to {c['scale']:.2f})")
        return

    fp32, bf16 = gemm_rate(torch.float32), gemm_rate(torch.bfloat16)
    s = bench_sampler(args.model, args.batch, args.steps, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        z = bench_store(tuple(args.grid), args.members, args.leads, args.repeats, Path(tmp))

    rows = [
        ("GEMM 1024³ fp32 / bf16", f"{fp32 / 1e9:.1f} / {bf16 / 1e9:.1f} GFLOP/s",
         f"bf16/fp32 {bf16 / fp32:.2f}"),
        (f"forward, model={args.model} batch={args.batch}", f"{s['forward_s'] * 1e3:.1f} ms",
         f"{s['forward_per_s']:.2f} evals/s"),
        (f"sampler, {args.steps} levels = {s['evals']} evals", f"{s['sampler_s'] * 1e3:.1f} ms",
         f"{s['sampler_evals_per_s']:.2f} evals/s"),
        ("sampler evals/s ÷ plain forward evals/s", "",
         f"{s['sampler_evals_per_s'] / s['forward_per_s']:.3f}"),
        ("sampler overhead beyond network (goal < 10%)", "", f"{100 * s['overhead']:.2f} %"),
        (f"raw numpy→zarr, {z['MB']:.0f} MB", f"{z['raw_MBps']:.0f} MB/s", "1.000"),
        ("ForecastStore.write", f"{z['store_MBps']:.0f} MB/s",
         f"{z['store_MBps'] / z['raw_MBps']:.3f} of raw"),
        ("rollout step (slab + state + progress)", f"{z['rollout_MBps']:.0f} MB/s",
         f"{z['rollout_MBps'] / z['raw_MBps']:.3f} of raw"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for name, absolute, ratio in rows:
        print(f"{name:<{width}}  {absolute:>22}  {ratio}")


if __name__ == "__main__":
    main()
