"""DeepSpeed training-step throughput, as ratios to the same device's GEMM rate measured in the same run.

    python tools/bench_step.py [--device cpu|cuda|xpu] [--threads 2] [--steps 3] [--cases small,block1.3b,demo]
                               [--variants eager,compiled,checkpointed] [--profile]
    python tools/bench_step.py --device cuda --cases block1.3b --big-grid 180x360 --big-depth 8 --profile

Cases: `small` (the `small` preset, 32×64 synthetic store, 8×8 windows, batch 8, one rank with --threads);
`block1.3b` (the 1.3B block: dim 1536, 12 heads, SwiGLU 4096, 30×30 windows, --big-depth blocks on --big-grid,
batch 1); `demo` (the main job's setting: `small` on 2 ranks with WP=2, micro-batch 4 per rank as in
ds_configs/zero1_fp32.json, one thread per rank; reports training samples per minute); `demo-dp2` (the same global
batch on DP=2, micro-batch 2 per rank). Variants: `eager`
(train.compile off), `compiled` (train.compile, on in the `small` preset: each Swin block through torch.compile),
`checkpointed` (model.checkpoint_activations). Precisions: fp32 (ds_configs/zero1_fp32.json) and bf16
(zero1_bf16.json); on the CPU bf16 only where it is native (or with --force-bf16), on an accelerator bf16 unless
--precisions says.
The device is chosen through DeepSpeed's accelerator (DS_ACCELERATOR), so XPU needs no import here.

Model FLOPs come from aeris_ds.perf.flops (forward + backward); hardware FLOPs add the recomputed forward of
checkpointed blocks. The eager fp32 step is cross-checked against torch's FlopCounterMode. Each case runs in
fresh processes, so its peak memory (RSS on the CPU, allocator peak on an accelerator) is its own.
Goals (issue 13): CPU `small` ≥ 0.55 of the fp32 GEMM rate; GPU ≥ 0.60 (bf16, eager default path).
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import os
import resource
import socket
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula, sdpa_flop_count

aten = torch.ops.aten
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def register_cpu_sdpa_flops() -> None:
    """FlopCounterMode has no formula for SDPA's CPU kernels (DESIGN §6): forward 1×, backward 2× (model FLOPs,
    no recompute), matching aeris_ds.perf.flops."""

    @register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu)
    def _forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    @register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward)
    def _backward(grad_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return 2 * sdpa_flop_count(query_shape, key_shape, value_shape)


def accelerator():
    from deepspeed.accelerator import get_accelerator

    return get_accelerator()


def gemm_rate(dtype: torch.dtype, max_size: int, seconds: float = 2.0) -> float:
    """FLOP/s of a square matmul on the current device (CPU: at the current thread count). The size doubles
    from 256 up to max_size while one product takes < 0.1 s, so a dtype without native kernels (bf16 on
    AVX2: ~50× slower) stays short."""
    acc = accelerator()
    device = acc.current_device_name()
    size = max_size // 4
    while True:
        a, b = torch.randn(size, size, dtype=dtype, device=device), torch.randn(size, size, dtype=dtype, device=device)
        start = time.perf_counter()
        a @ b  # also the warm-up
        acc.synchronize()
        if time.perf_counter() - start > 0.1 or size >= max_size:
            break
        size *= 2
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or n < 2:
        a @ b
        acc.synchronize()
        n += 1
    return 2 * size**3 * n / elapsed


def make_store(path: Path, lat: int, lon: int) -> Path:
    """Synthetic store in the `small` preset's channels, with its normalization stats."""
    from aeris_ds.config import load_config
    from aeris_ds.data.source import WeatherSource
    from aeris_ds.data.stats import compute_stats, save_stats
    from aeris_ds.data.synthetic import synthetic_store

    store = synthetic_store(path, n_lat=lat, n_lon=lon, days=6, levels=(250, 500, 850))
    save_stats(compute_stats(WeatherSource(store, load_config("small").data, "train"), progress=False), store)
    return store


def case_config(name: str, variant: str, store: Path, out: Path, big: tuple[int, int, int]):
    """(experiment config, micro-batch per rank, ranks) of a case."""
    from aeris_ds.config import load_config

    model = {"checkpoint_activations": True} if variant == "checkpointed" else {}
    # bf16 None: the case's precision is its DeepSpeed config's (the preset's "auto" would override it)
    train = {"out_dir": str(out), "wandb_mode": "disabled", "compile": variant == "compiled", "bf16": None}
    common = {"data": {"store": str(store), "workers": 0}, "train": train}
    if name == "small":
        return load_config("small", {**common, "layout": {"wp": 1}, "model": model}), 8, 1
    if name == "demo":
        return load_config("small", {**common, "model": model}), None, 2  # the preset's WP=2 and ds_config micro
    if name == "demo-dp2":  # the same global batch of 4 on DP=2: half the samples per rank, no all-to-all
        return load_config("small", {**common, "model": model, "layout": {"wp": 1, "dp": 2}}), 2, 2
    lat, lon, depth = big
    model |= {"dim": 1536, "heads": 12, "mlp_hidden": 4096, "window": [30, 30], "depth": depth}
    return load_config("small", {**common, "layout": {"wp": 1}, "model": model, "grid": {"lat": lat, "lon": lon}}), 1, 1


def run_case(name: str, variant: str, prec: str, store: str, out: str, big: tuple[int, int, int], steps: int,
             threads: int, profile: bool) -> dict:
    """Time `steps` DeepSpeed steps on one repeated micro-batch, after warm-up steps (compilation included)."""
    import torch.distributed as dist

    from aeris_ds.config import load_ds_config
    from aeris_ds.perf.flops import step_flops
    from aeris_ds.train import setup, train_step

    torch.set_num_threads(threads)
    acc = accelerator()
    cfg, micro, _ = case_config(name, variant, Path(store), Path(out), big)
    ds = load_ds_config(f"ds_configs/zero1_{prec}.json")
    if micro:
        ds["train_micro_batch_size_per_gpu"] = micro
    engine, ps, batches, pipeline, global_batch = setup(cfg, ds)
    data = itertools.repeat(batches[0])
    start = time.perf_counter()  # the warm-up: compiled, the first step compiles and the second settles
    loss0, _ = train_step(engine, data, pipeline, ps.replica_group)
    train_step(engine, data, pipeline, ps.replica_group)
    warmup = time.perf_counter() - start
    # The device's GEMM rate measured just before and just after the timed steps, so a shared machine's load
    # weighs on both alike (each rank measures its own share of the machine).
    max_size = 2048 if acc.device_name() == "cpu" else 8192

    def rates() -> dict[str, float]:
        return {p: gemm_rate(DTYPES[p], max_size, seconds=1.0) * dist.get_world_size() for p in {"fp32", prec}}

    before = rates()
    acc.reset_peak_memory_stats()
    acc.synchronize()
    start = time.perf_counter()
    losses = [train_step(engine, data, pipeline, ps.replica_group)[0] for _ in range(steps)]
    acc.synchronize()
    wall = (time.perf_counter() - start) / steps
    after = rates()
    rate = {p: (before[p] + after[p]) / 2 for p in before}
    counted = float("nan")
    if variant == "eager" and prec == "fp32":
        with FlopCounterMode(display=False) as counter:
            train_step(engine, data, pipeline, ps.replica_group)
        counted = counter.get_total_flops() * dist.get_world_size()  # the ranks split the work evenly
    table = None
    if profile:
        on_device = acc.device_name() != "cpu"
        activities = [torch.profiler.ProfilerActivity.CPU]
        if on_device:
            activities.append(getattr(torch.profiler.ProfilerActivity, acc.device_name().upper()))
        with torch.profiler.profile(activities=activities) as prof:
            train_step(engine, data, pipeline, ps.replica_group)
            acc.synchronize()
        sort = "self_device_time_total" if on_device else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=sort, row_limit=20, max_name_column_width=60)
    if acc.device_name() == "cpu":
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    else:
        peak = acc.max_memory_allocated()
    params = sum(p.numel() for p in engine.module.parameters())
    return {"step_s": wall, "flops": step_flops(cfg) * global_batch,
            "hw_flops": step_flops(cfg, recompute=cfg.model.checkpoint_activations) * global_batch,
            "counted": counted, "params": params, "loss": [loss0, *losses], "peak_gib": peak / 2**30,
            "samples": global_batch, "rate": rate, "profile": table, "warmup_s": warmup}


def _child(conn, rank: int, world: int, port: int, device: str, args) -> None:
    # A cold compile cache per case, as on a fresh clone (the main job's first run).
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = f"{args[4]}/inductor_cache"
    os.environ.update(DS_ACCELERATOR=device, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        conn.send(run_case(*args))
    except BaseException as err:  # noqa: BLE001 - reported by the parent
        conn.send({"error": f"{type(err).__name__}: {err}"})
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def in_children(ranks: int, device: str, *args) -> dict:
    """One case on `ranks` fresh processes: its own process group, peak memory and DeepSpeed globals.
    Returns rank 0's result (every rank times the same synchronous steps)."""
    ctx = mp.get_context("spawn")  # a fork after the GEMM warm-up inherits a busy OpenMP pool and hangs
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pipes, procs = [], []
    for rank in range(ranks):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_child, args=(child, rank, ranks, port, device, args))
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    results = [p.recv() for p in pipes]
    for proc in procs:
        proc.join()
    for result in results:
        if "error" in result:
            raise RuntimeError(f"case {args[:3]} failed: {result['error']}")
    return results[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda", "xpu"], default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of a one-rank case")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per case (after two warm-up steps)")
    parser.add_argument("--cases", default="small,block1.3b")
    parser.add_argument("--variants", default="eager,compiled,checkpointed")
    parser.add_argument("--precisions", default="auto", help="fp32,bf16 (auto: see above)")
    parser.add_argument("--big-grid", default="30x60", help="grid of the 1.3B-style case (multiple of 30×30)")
    parser.add_argument("--big-depth", type=int, default=2, help="blocks of the 1.3B-style case")
    parser.add_argument("--force-bf16", action="store_true", help="time bf16 steps even without native bf16")
    parser.add_argument("--profile", action="store_true", help="print the top ops of one step per case")
    args = parser.parse_args()
    os.environ["DS_ACCELERATOR"] = args.device  # before DeepSpeed picks one; children inherit it
    big = (*(int(v) for v in args.big_grid.split("x")), args.big_depth)
    on_cpu = args.device == "cpu"
    torch.set_num_threads(args.threads)
    register_cpu_sdpa_flops()
    from aeris_ds.perf.flops import native_bf16

    if args.precisions != "auto":
        precisions = args.precisions.split(",")
    elif on_cpu:
        precisions = ["fp32", "bf16"] if native_bf16() or args.force_bf16 else ["fp32"]
    else:
        precisions = ["bf16"]
    unit, scale = ("GFLOP/s", 1e9) if on_cpu else ("TFLOP/s", 1e12)
    print(f"device {accelerator().device_name()}" + (f"; threads {args.threads}; native bf16 (amx_bf16/avx512_bf16): "
                                                    f"{native_bf16()}" if on_cpu else ""))

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        stores = {}
        for name in args.cases.split(","):
            grid = big[:2] if name == "block1.3b" else (32, 64)
            if grid not in stores:
                stores[grid] = make_store(Path(tmp) / f"{grid[0]}x{grid[1]}.zarr", *grid)
            for variant, prec in itertools.product(args.variants.split(","), precisions):
                threads = 1 if name.startswith("demo") else args.threads
                ranks = case_config(name, variant, Path(tmp), Path(tmp), big)[2]
                start = time.perf_counter()
                r = in_children(ranks, args.device, name, variant, prec, str(stores[grid]),
                                f"{tmp}/{name}_{variant}_{prec}", big, args.steps, threads, args.profile)
                r["total_s"] = time.perf_counter() - start
                if r["profile"]:
                    print(f"\n== {name} {variant} {prec}: top ops of one step ==\n{r['profile']}", flush=True)
                rows.append((name, variant, prec, r))

    print(f"\n{'case':<10} {'variant':<12} {'prec':>4} {'params':>8} {'step s':>8} {'model ' + unit:>14} "
          f"{'hw ' + unit:>11} {'GEMM':>7} {'/GEMM':>6} {'hw/GEMM':>7} {'/fp32 GEMM':>10} {'samples/min':>11} "
          f"{'peak GiB':>8} {'count/model':>11} {'warm-up s':>9} {'case s':>7}  losses")
    for name, variant, prec, r in rows:
        model, hw, rate = r["flops"] / r["step_s"], r["hw_flops"] / r["step_s"], r["rate"]
        losses = " ".join(f"{x:.4f}" for x in r["loss"])
        print(f"{name:<10} {variant:<12} {prec:>4} {r['params'] / 1e6:>7.2f}M {r['step_s']:>8.3f} "
              f"{model / scale:>14.2f} {hw / scale:>11.2f} {rate[prec] / scale:>7.1f} {model / rate[prec]:>6.2f} "
              f"{hw / rate[prec]:>7.2f} "
              f"{model / rate['fp32']:>10.2f} {60 * r['samples'] / r['step_s']:>11.0f} {r['peak_gib']:>8.2f} "
              f"{r['counted'] / r['flops']:>11.3f} {r['warmup_s']:>9.1f} {r['total_s']:>7.0f}  {losses}")
    if on_cpu and args.precisions == "auto" and "bf16" not in precisions:
        print("\nbf16 steps skipped: this CPU has no native bf16 (see the GEMM ratio); --force-bf16 runs them")
    print(f"\nGEMM: the device's {unit} in that precision, measured by each case just before and after its timed steps "
          "(the demo: the sum of its ranks, one thread each); /GEMM: the job's model FLOP/s ÷ it; hw: with the "
          "recomputed forward of checkpointed blocks; warm-up s: the first two steps (compiled: compilation with a "
          "cold cache, as on a fresh clone).")


if __name__ == "__main__":
    main()
