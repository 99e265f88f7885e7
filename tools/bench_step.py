"""DeepSpeed training-step throughput on one rank, as ratios to this machine's own GEMM rate (one run).

    python tools/bench_step.py [--threads 2] [--steps 3] [--big-grid 30x60] [--profile]

Rows: the `small` preset (32×64 synthetic store, 8×8 windows, batch 8) and a 1.3B-style block stack at
reduced depth (dim 1536, 12 heads, SwiGLU 4096, 30×30 windows, depth 2 = one plain + one shifted block,
batch 1), each in fp32 (ds_configs/zero1_fp32.json) and, where the CPU has native bf16 (or with --force-bf16),
in bf16 (ds_configs/zero1_bf16.json). Model FLOPs
come from aeris_ds.perf.flops (forward + backward, no recompute) and are cross-checked against
torch's FlopCounterMode on one step. Each case runs in its own fresh process, so its peak RSS is its own.
Goals (issue 3): fp32 ≥ 0.5 of the fp32 GEMM rate; bf16 ≥ 1.5× faster where the CPU has native bf16.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula, sdpa_flop_count

from aeris_ds.perf.flops import step_flops

aten = torch.ops.aten


def register_cpu_sdpa_flops() -> None:
    """FlopCounterMode has no formula for SDPA's CPU kernels (DESIGN §6): forward 1×, backward 2× (model FLOPs,
    no recompute), matching aeris_ds.perf.flops."""

    @register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu)
    def _forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    @register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward)
    def _backward(grad_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return 2 * sdpa_flop_count(query_shape, key_shape, value_shape)


def gemm_rate(dtype: torch.dtype, max_size: int = 2048, seconds: float = 2.0) -> float:
    """FLOP/s of a square matmul at the current thread count: the size doubles from 256 up to max_size while
    one product takes < 0.1 s, so a dtype without native kernels (bf16 on AVX2: ~50× slower) stays short."""
    size = 256
    while True:
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        start = time.perf_counter()
        a @ b  # also the warm-up
        if time.perf_counter() - start > 0.1 or size >= max_size:
            break
        size *= 2
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or n < 2:
        a @ b
        n += 1
    return 2 * size**3 * n / elapsed


def native_bf16() -> bool:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "amx_bf16" in flags or "avx512_bf16" in flags


def make_store(path: Path, lat: int, lon: int) -> Path:
    """Synthetic store in the `small` preset's channels, with its normalization stats."""
    from aeris_ds.config import load_config
    from aeris_ds.data.source import WeatherSource
    from aeris_ds.data.stats import compute_stats, save_stats
    from aeris_ds.data.synthetic import synthetic_store

    store = synthetic_store(path, n_lat=lat, n_lon=lon, days=6, levels=(250, 500, 850))
    save_stats(compute_stats(WeatherSource(store, load_config("small").data, "train"), progress=False), store)
    return store


def case_config(name: str, store: Path, out: Path, big_grid: tuple[int, int]):
    from aeris_ds.config import load_config

    common = {"data": {"store": str(store), "workers": 0}, "layout": {"wp": 1},
              "train": {"out_dir": str(out), "wandb_mode": "disabled"}}
    if name == "small":
        return load_config("small", common), 8
    lat, lon = big_grid
    model = {"dim": 1536, "heads": 12, "mlp_hidden": 4096, "window": [30, 30], "depth": 2}
    return load_config("small", {**common, "model": model, "grid": {"lat": lat, "lon": lon}}), 1


def run_case(name: str, ds_name: str, store: str, out: str, big_grid: tuple[int, int], steps: int, threads: int,
             profile: bool) -> dict:
    """Time `steps` DeepSpeed steps on one repeated micro-batch (after one counted warm-up step)."""
    from aeris_ds.config import load_ds_config
    from aeris_ds.train import setup, train_step

    torch.set_num_threads(threads)
    cfg, micro = case_config(name, Path(store), Path(out), big_grid)
    ds = load_ds_config(f"ds_configs/{ds_name}.json")
    ds["train_micro_batch_size_per_gpu"] = micro
    engine, ps, batches, pipeline, global_batch = setup(cfg, ds)
    data = itertools.repeat(batches[0])
    with FlopCounterMode(display=False) as counter:
        loss0, _ = train_step(engine, data, pipeline, ps.replica_group)
    counted = counter.get_total_flops()
    start = time.perf_counter()
    losses = [train_step(engine, data, pipeline, ps.replica_group)[0] for _ in range(steps)]
    wall = (time.perf_counter() - start) / steps
    table = None
    if profile:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            train_step(engine, data, pipeline, ps.replica_group)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    params = sum(p.numel() for p in engine.module.parameters())
    return {"step_s": wall, "flops": step_flops(cfg) * global_batch, "counted": counted, "params": params,
            "loss": [loss0, *losses], "rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "profile": table}


def _child(conn, args) -> None:
    try:
        conn.send(run_case(*args))
    except BaseException as err:  # noqa: BLE001 - reported by the parent
        conn.send({"error": f"{type(err).__name__}: {err}"})
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def in_child(*args) -> dict:
    """One case in a fresh process: its own process group, peak RSS and DeepSpeed globals."""
    ctx = mp.get_context("spawn")  # a fork after the GEMM warm-up inherits a busy OpenMP pool and hangs
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(child, args))
    proc.start()
    result = parent.recv()
    proc.join()
    if "error" in result:
        raise RuntimeError(f"case {args[:2]} failed: {result['error']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per case (after one warm-up step)")
    parser.add_argument("--big-grid", default="30x60", help="grid of the 1.3B-style case (multiple of 30×30)")
    parser.add_argument("--cases", default="small,block1.3b")
    parser.add_argument("--force-bf16", action="store_true", help="time bf16 steps even without native bf16")
    parser.add_argument("--profile", action="store_true", help="print the top ops of one fp32 step per case")
    args = parser.parse_args()
    big_grid = tuple(int(v) for v in args.big_grid.split("x"))
    torch.set_num_threads(args.threads)
    register_cpu_sdpa_flops()

    rate = {"fp32": gemm_rate(torch.float32), "bf16": gemm_rate(torch.bfloat16)}
    precisions = ["fp32", "bf16"] if native_bf16() or args.force_bf16 else ["fp32"]
    print(f"threads {args.threads}; native bf16 (amx_bf16/avx512_bf16): {native_bf16()}")
    print(f"GEMM: fp32 {rate['fp32'] / 1e9:.1f} GFLOP/s, bf16 {rate['bf16'] / 1e9:.1f} GFLOP/s "
          f"(bf16/fp32 {rate['bf16'] / rate['fp32']:.2f})")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        stores = {"small": make_store(Path(tmp) / "small.zarr", 32, 64)}
        if "block1.3b" in args.cases:
            stores["block1.3b"] = make_store(Path(tmp) / "big.zarr", *big_grid)
        for name in args.cases.split(","):
            res = {}
            for prec in precisions:
                res[prec] = in_child(name, f"zero1_{prec}", str(stores[name]), f"{tmp}/{name}_{prec}", big_grid,
                                     args.steps, args.threads, args.profile and prec == "fp32")
                if res[prec]["profile"]:
                    print(f"\n== {name} {prec}: top ops of one step ==\n{res[prec]['profile']}")
            rows.append((name, res))

    print(f"\n{'case':<10} {'params':>8} {'prec':>5} {'step s':>8} {'GFLOP/s':>8} {'/fp32 GEMM':>10} "
          f"{'/own GEMM':>9} {'bf16 speed-up':>13} {'count/model':>11} {'peak RSS GiB':>12}  losses")
    for name, res in rows:
        for prec, r in res.items():
            achieved = r["flops"] / r["step_s"]
            speed = f"{res['fp32']['step_s'] / r['step_s']:.2f}" if prec == "bf16" else ""
            losses = " ".join(f"{x:.4f}" for x in r["loss"])
            print(f"{name:<10} {r['params'] / 1e6:>7.2f}M {prec:>5} {r['step_s']:>8.3f} {achieved / 1e9:>8.1f} "
                  f"{achieved / rate['fp32']:>10.2f} {achieved / rate[prec]:>9.2f} {speed:>13} "
                  f"{r['counted'] / r['flops']:>11.3f} {r['rss_gib']:>12.2f}  {losses}")
    if "bf16" not in precisions:
        print("\nbf16 steps skipped: this CPU has no native bf16 (see the GEMM ratio); --force-bf16 runs them")
    print("\ngoals: fp32 ≥ 0.50 of the fp32 GEMM rate; bf16 ≥ 1.5× faster than fp32 where bf16 is native "
          f"(native here: {native_bf16()})")


if __name__ == "__main__":
    main()
