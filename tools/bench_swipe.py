"""SWiPe benchmark: bytes per step per rank and axis (measured vs analytic), the shifted block's cost, the
paper's 40B layout from the analytic model, and weak scaling 1 → 2 CPU ranks.

    python tools/bench_swipe.py [--repeats 3] [--steps 8] [--out results/bench_swipe.csv]

A `small`-family model (dim 128, 4 heads, depth 4, 8×8 windows, fp32) on synthetic 32×64 data, trained with
aeris_ds.train.run under torchrun on 1, 2 and 4 ranks, one thread per rank. Weak scaling doubles the grid in
longitude with the rank count (tokens per rank constant); timings are medians over steps and repeats,
reported as ratios to the 1-rank run of the same repeat. Bytes come from mappings.BYTES_SENT as train.run logs
them (bytes_sp: to ranks of the same WP rank; bytes_wp: to other WP ranks) and from aeris_ds.perf.cost.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DS_CONFIG = "ds_configs/zero1_fp32.json"
ELEM = 4
MODES = ("folded", "halo")
BYTE_LAYOUTS = {1: [{}], 2: [{"wp": 2}, {"sp": 2}], 4: [{"wp": 4}, {"sp": 4}, {"wp": 2, "sp": 2}]}
WEAK_LAYOUTS = [{"wp": 2}, {"sp": 2}]
PAPER = {"lat": 720, "lon": 1440, "window": (30, 30), "wp": 36, "sp": 12}


def config(store: str, lon: int, layout: dict, steps: int, out: str):
    from aeris_ds.config import load_config

    layout = {"dp": 1, "pp": 1, "wp": 1, "sp": 1, **layout}  # the preset's own layout is WP=2
    return load_config("small", {"grid": {"lon": lon}, "layout": layout,
                                 "data": {"store": store, "workers": 0},
                                 "train": {"steps": steps, "out_dir": out, "wandb_mode": "disabled",
                                           "checkpoint_every": 0, "ds_config": DS_CONFIG}})


def layout_name(layout: dict) -> str:
    parts = [f"{k.upper()}{v}" for k, v in layout.items() if k in ("dp", "pp", "wp", "sp") and v > 1]
    return "×".join(parts) or "single"


# ---- worker side: one torchrun job runs several configurations, engine after engine ----

def worker(spec_path: Path) -> None:
    import torch.distributed as dist

    from aeris_ds.config import load_ds_config
    from aeris_ds.train import run

    spec = json.loads(spec_path.read_text())
    results = []
    for i, r in enumerate(spec["runs"]):
        cfg = config(r["store"], r["lon"], r["layout"], r["steps"], f"{spec['out']}/run{i}")
        ds = load_ds_config(DS_CONFIG)
        batch = ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * cfg.layout.dp
        history = run(cfg, ds)["history"]
        results.append({"bytes": [{a: h.get(f"bytes_{a}", 0) for a in ("sp", "wp")} for h in history],
                        "step_s": [batch / h["samples_per_s"] for h in history]})
    rank = dist.get_rank()
    Path(spec["out"], f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


def launch(world: int, runs: list[dict], work: Path) -> list[list[dict]]:
    """Run the configurations on `world` local ranks; returns results[rank][run]."""
    out = Path(tempfile.mkdtemp(dir=work))
    spec = out / "spec.json"
    spec.write_text(json.dumps({"out": str(out), "runs": runs}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={world}", f"--master_port={port}",
           __file__, "--worker", str(spec)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{world}-rank job failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]


# ---- driver side ----

def make_store(path: Path, lon: int) -> str:
    from aeris_ds.config import load_config
    from aeris_ds.data.source import WeatherSource
    from aeris_ds.data.stats import compute_stats, save_stats
    from aeris_ds.data.synthetic import synthetic_store

    cfg = load_config("small")
    if not path.exists():
        synthetic_store(path, cfg.grid.lat, lon, levels=tuple(cfg.data.levels))
        save_stats(compute_stats(WeatherSource(path, cfg.data, "train"), progress=False), path)
    return str(path)


def gemm_gflops(n: int = 1024, repeats: int = 5) -> float:
    """This machine's 1-thread fp32 GEMM rate: the context for the absolute step times."""
    import torch

    torch.set_num_threads(1)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


class Table:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, section: str, case: str, metric: str, value: float, goal: str = "") -> None:
        self.rows.append({"section": section, "case": case, "metric": metric, "value": value, "goal": goal})

    def print(self) -> None:
        for section in dict.fromkeys(r["section"] for r in self.rows):  # sections in first-seen order
            print(f"\n== {section}")
            for r in (r for r in self.rows if r["section"] == section):
                self._print_row(r)

    @staticmethod
    def _print_row(r: dict) -> None:
        value = f"{r['value']:.4g}" if isinstance(r["value"], float) else str(r["value"])
        print(f"  {r['case']:<34} {r['metric']:<34} {value:>14}  {r['goal']}")

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["section", "case", "metric", "value", "goal"])
            w.writeheader()
            w.writerows(self.rows)


def bytes_section(table: Table, store: str, work: Path, steps: int) -> None:
    """Measured vs analytic per step per rank and axis, folded vs halo, on 1, 2 and 4 ranks (32×64 grid)."""
    from aeris_ds.config import load_ds_config
    from aeris_ds.parallel.layout import WindowGrid
    from aeris_ds.perf.cost import block_bytes, step_bytes

    micro = load_ds_config(DS_CONFIG)["train_micro_batch_size_per_gpu"]
    for world, layouts in BYTE_LAYOUTS.items():
        cases = [{**lay, "shift_exchange": m} for lay in layouts for m in (MODES if lay else MODES[:1])]
        runs = [{"store": store, "lon": 64, "layout": c, "steps": steps} for c in cases]
        results = launch(world, runs, work)
        for i, case in enumerate(cases):
            cfg = config(store, 64, case, steps, "")
            name = f"{layout_name(case)} {case['shift_exchange']}"
            want = step_bytes(cfg, micro, 1, ELEM)
            for axis in ("sp", "wp"):
                got = np.array([[h[axis] for h in rank[i]["bytes"]] for rank in results])  # [ranks, steps]
                table.add("bytes per step per rank (small, 32x64)", name, f"{axis} measured (max rank)",
                          int(got.max()))
                table.add("bytes per step per rank (small, 32x64)", name, f"{axis} analytic (max rank)",
                          int(want[axis].max()))
                if want[axis].max():
                    ratio = float((got / want[axis][0][:, None]).max())
                    table.add("bytes per step per rank (small, 32x64)", name, f"{axis} measured/analytic",
                              ratio, "<= 1.05")
            step_s = np.median([s for rank in results for s in rank[i]["step_s"][1:]])
            table.add("bytes per step per rank (small, 32x64)", name, "step time s (median)", float(step_s))
            lay = cfg.layout
            grid = WindowGrid(cfg.grid.lat, cfg.grid.lon, cfg.model.window, lay.wp, lay.sp, lay.window_assignment)
            plain = sum(block_bytes(grid, cfg.model.dim, False).values()).sum()
            shifted = sum(block_bytes(grid, cfg.model.dim, True, lay.shift_exchange).values()).sum()
            if plain:  # without SP a plain block sends nothing
                table.add("bytes per step per rank (small, 32x64)", name, "shifted/plain block (analytic)",
                          float(shifted / plain))
        for lay in layouts:
            if not lay:
                continue
            folded, halo = (cases.index({**lay, "shift_exchange": m}) for m in MODES)
            f = max(sum(rank[folded]["bytes"][0].values()) for rank in results)
            h = max(sum(rank[halo]["bytes"][0].values()) for rank in results)
            table.add("folded vs halo (measured, per step, busiest rank)", layout_name(lay), "folded/halo bytes",
                      f / h, "<= 1 (one all-to-all instead of roll + all-to-all)")


def paper_section(table: Table) -> None:
    """The analytic model at the paper's 40B layout: shifted vs plain block, blocks vs round-robin."""
    from aeris_ds.config import load_config
    from aeris_ds.parallel.layout import WindowGrid
    from aeris_ds.perf.cost import shift_cost, step_bytes

    for assignment in ("blocks", "round_robin"):
        grid = WindowGrid(PAPER["lat"], PAPER["lon"], PAPER["window"], PAPER["wp"], PAPER["sp"], assignment)
        case = f"40B WP36 SP12 {assignment}"
        for mode in ("folded", "halo", "halo_hidden"):
            cost = shift_cost(grid, mode)
            goal = "<= 1.05" if mode == "folded" else ""
            table.add("paper layout (analytic)", case, f"shifted/plain {mode} (all ranks)", cost["mean"], goal)
            table.add("paper layout (analytic)", case, f"shifted/plain {mode} (busiest rank)", cost["max"], goal)
        table.add("paper layout (analytic)", case, "moved fraction f", cost["moved_fraction"])
    cfg = load_config("aeris-40b")
    step = step_bytes(cfg, micro=1, accumulation=1, elem=2)  # bf16, one sample per micro-batch
    for axis, per_rank in step.items():
        table.add("paper layout (analytic)", "40B PP20 WP36 SP12, 1 micro-batch bf16",
                  f"GB per step per rank {axis} (max)", float(per_rank.max() / 1e9))


def weak_section(table: Table, stores: dict[int, str], work: Path, steps: int, repeats: int) -> None:
    """Time per step 1 → 2 ranks with the grid doubled in longitude; efficiency = t(1 rank) / t(2 ranks)."""
    times: dict[str, list[float]] = {"single": []} | {layout_name(lay): [] for lay in WEAK_LAYOUTS}
    for _ in range(repeats):  # interleaved, so drifting load on the shared cores hits every case alike
        (one,) = launch(1, [{"store": stores[64], "lon": 64, "layout": {}, "steps": steps}], work)
        times["single"].append(float(np.median(one[0]["step_s"][2:])))
        two = launch(2, [{"store": stores[128], "lon": 128, "layout": lay, "steps": steps} for lay in WEAK_LAYOUTS],
                     work)
        for i, lay in enumerate(WEAK_LAYOUTS):
            times[layout_name(lay)].append(float(np.median([s for rank in two for s in rank[i]["step_s"][2:]])))
    base = float(np.median(times["single"]))
    table.add("weak scaling 1->2 ranks (32x64 per rank)", "single 32x64", "step time s (median)", base)
    for lay in WEAK_LAYOUTS:
        name = layout_name(lay)
        t = float(np.median(times[name]))
        table.add("weak scaling 1->2 ranks (32x64 per rank)", f"{name} 32x128", "step time s (median)", t)
        table.add("weak scaling 1->2 ranks (32x64 per rank)", f"{name} 32x128", "efficiency t1/t2", base / t,
                  ">= 0.9")
        per_repeat = [a / b for a, b in zip(times["single"], times[name], strict=True)]
        table.add("weak scaling 1->2 ranks (32x64 per rank)", f"{name} 32x128", "efficiency per repeat",
                  " ".join(f"{e:.3f}" for e in per_repeat))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="weak-scaling repeats (medians)")
    parser.add_argument("--steps", type=int, default=6, help="training steps per weak-scaling run")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench_swipe.csv")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return
    table = Table()
    table.add("machine", "1 thread", "fp32 GEMM GFLOP/s (1024^3)", gemm_gflops())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        stores = {lon: make_store(work / f"synthetic_{lon}.zarr", lon) for lon in (64, 128)}
        paper_section(table)
        bytes_section(table, stores[64], work, steps=2)
        weak_section(table, stores, work, args.steps, args.repeats)
    table.print()
    table.write(args.out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
