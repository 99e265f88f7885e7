"""Scaling sweeps: a YAML names the axes to vary; one job per point; every run appends one JSON line.

    python launchers/sweep.py run launchers/sweeps/cpu_small.yaml --out results/sweep_cpu
    python launchers/sweep.py report results/sweep_cpu/results.jsonl --out results/sweep_cpu

A sweep file::

    name: cpu_small
    config: small                  # preset or YAML; ``overrides`` are merged into it
    overrides: {data: {workers: 0}}
    store: synthetic               # optional: generate a synthetic store on the config's grid
    ds_config: ds_configs/zero1_fp32.json
    steps: 6
    target: local                  # local | aurora | slurm-cuda | lumi (batch targets write job scripts)
    nodes: 1                       # batch targets
    axes:                          # a dict, or a list of dicts whose products are concatenated
      layout: ["dp=1", "wp=2", "pp=2,wp=2"]
      micro_batch: [2]
      zero_stage: [1]
      precision: [fp32]           # fp32 | bf16

Each local point runs ``launchers/local.sh`` (torchrun), then reads the run's ``metrics.jsonl``; batch
points are collected later with ``sweep.py collect DIR`` on the cluster.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from aeris_ds.config import REPO_ROOT, ExperimentConfig, load_config, load_ds_config, parse_layout
from aeris_ds.launch import TARGETS
from aeris_ds.parallel.layout import Layout
from aeris_ds.perf.flops import cpu_gemm_rate, peak_flops, step_flops

AXES = ("config", "layout", "micro_batch", "zero_stage", "precision")


def points(sweep: dict) -> list[dict]:
    """Every combination of the axes (a list of axis dicts is the concatenation of their products)."""
    blocks = sweep["axes"] if isinstance(sweep["axes"], list) else [sweep["axes"]]
    out = []
    for block in blocks:
        unknown = set(block) - set(AXES)
        if unknown:
            raise ValueError(f"unknown sweep axes {sorted(unknown)} (known: {', '.join(AXES)})")
        names = list(block)
        for values in itertools.product(*(block[n] for n in names)):
            point = {"config": sweep["config"], "layout": "dp=1", "micro_batch": None, "zero_stage": None,
                     "precision": None, **dict(zip(names, values, strict=True))}
            point["layout"] = str(Layout(**parse_layout(str(point["layout"]))))  # every axis: no preset leaks in
            out.append(point)
    return out


def point_id(point: dict) -> str:
    cfg = Path(str(point["config"])).stem
    axes = [a for a in point["layout"].split(",") if not a.endswith("=1")] or ["dp=1"]
    parts = [cfg, "_".join(axes).replace("=", "")]
    parts += [f"{k[0]}{point[k]}" for k in ("micro_batch", "zero_stage", "precision") if point[k] is not None]
    return "-".join(parts)


def materialise(sweep: dict, point: dict, pdir: Path, store: Path | None) -> tuple[Path, Path, ExperimentConfig]:
    """Write the point's experiment YAML and DeepSpeed JSON; returns their paths and the config."""
    overrides = dict(sweep.get("overrides") or {})
    if store is not None:
        overrides["data"] = {**overrides.get("data", {}), "store": str(store)}
    overrides["layout"] = parse_layout(point["layout"])  # all four axes (see points)
    cfg = load_config(point["config"], overrides)
    ds = load_ds_config(sweep.get("ds_config", cfg.train.ds_config))
    if point["micro_batch"] is not None:
        ds["train_micro_batch_size_per_gpu"] = int(point["micro_batch"])
    if point["zero_stage"] is not None:
        ds.setdefault("zero_optimization", {})["stage"] = int(point["zero_stage"])
    if point["precision"] is not None:
        ds["bf16"] = {"enabled": point["precision"] == "bf16"}
    pdir.mkdir(parents=True, exist_ok=True)
    cfg_path, ds_path = pdir / "config.yaml", pdir / "ds_config.json"
    cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    ds_path.write_text(json.dumps(ds, indent=1))
    return cfg_path, ds_path, cfg


def machine_name() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    model = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")
    return f"{model}, {os.cpu_count()} cores"


def collect(pdir: Path, cfg: ExperimentConfig, ds: dict, device: str, extra: dict) -> dict:
    """One result line from a finished run: medians over the steps after the first (warm-up)."""
    history = [json.loads(line) for line in (pdir / "run" / "metrics.jsonl").read_text().splitlines() if line]
    steady = history[1:] or history
    lay = cfg.layout
    ranks = lay.dp * lay.pp * lay.wp * lay.sp
    micro = int(ds.get("train_micro_batch_size_per_gpu", 1))
    acc = int(ds.get("gradient_accumulation_steps", 1))
    global_batch = micro * acc * lay.dp
    sps = statistics.median(r["samples_per_s"] for r in steady)
    bf16 = bool(ds.get("bf16", {}).get("enabled", False))
    dtype = "bf16" if bf16 else "fp32"
    # On a CPU a "device" is a core; ranks beyond the cores time-share them.
    devices = min(ranks, os.cpu_count() or 1) if device == "cpu" else ranks
    per_device = step_flops(cfg) * sps / devices
    peak = cpu_gemm_rate(dtype) if device == "cpu" else peak_flops(device, dtype)
    config = cfg.model_dump(mode="json")
    if config["data"]["store"]:  # relative to the sweep folder (which holds points/<id>/): no machine paths
        config["data"]["store"] = os.path.relpath(Path(config["data"]["store"]).resolve(), pdir.parent.parent.resolve())
    return {
        "id": pdir.name, "config": config, "layout": str(lay.as_layout()), "ranks": ranks,
        "devices": devices, "micro_batch": micro, "accumulation": acc, "global_batch": global_batch,
        "zero_stage": ds.get("zero_optimization", {}).get("stage", 0), "precision": dtype,
        "steps": len(history), "step_time_s": global_batch / sps, "samples_per_s": sps,
        "tflops_per_device": per_device / 1e12, "mfu": per_device / peak, "peak_flops": peak,
        "bytes_sp": statistics.median(r.get("bytes_sp", 0) for r in steady),
        "bytes_wp": statistics.median(r.get("bytes_wp", 0) for r in steady),
        "loss_last": history[-1]["loss"], **extra,
    }


def run_local(cmd: list[str], timeout: float, log: Path) -> tuple[int, float, float]:
    """Run a job; returns (exit code, wall seconds, peak RSS in MiB of its largest process).

    The job gets its own session so that a timeout ends the launcher and every rank it started.
    """
    start = time.time()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.time() > start + timeout:
                os.killpg(proc.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
    code = os.waitstatus_to_exitcode(status)
    if code:
        sys.stderr.write(log.read_text()[-3000:])
    return code, time.time() - start, usage.ru_maxrss / 1024  # Linux reports KiB


def make_store(cfg: ExperimentConfig, path: Path) -> Path:
    """A synthetic store on the config's grid with the config's variables (for sweeps without data)."""
    from aeris_ds.data.source import WeatherSource
    from aeris_ds.data.stats import compute_stats, save_stats
    from aeris_ds.data.synthetic import synthetic_store

    if not (path / "zarr.json").exists():
        synthetic_store(path, cfg.grid.lat, cfg.grid.lon, levels=tuple(cfg.data.levels))
        save_stats(compute_stats(WeatherSource(path, cfg.data, "train"), progress=False), path)
    return path


def run_sweep(sweep_file: Path, out: Path, dry_run: bool = False, timeout: float = 600) -> Path:
    sweep = yaml.safe_load(sweep_file.read_text())
    target = sweep.get("target", "local")
    if target not in TARGETS:
        raise ValueError(f"unknown sweep target {target!r} (known: {', '.join(TARGETS)})")
    out.mkdir(parents=True, exist_ok=True)
    store = None
    if sweep.get("store") == "synthetic":
        store = make_store(load_config(sweep["config"], sweep.get("overrides")), out / "store.zarr")
    results = out / "results.jsonl"
    done = {json.loads(line)["id"] for line in results.read_text().splitlines() if line} if results.exists() else set()
    for point in points(sweep):
        pdir = out / "points" / point_id(point)
        if pdir.name in done:  # a rerun resumes: finished points are kept
            continue
        cfg_path, ds_path, cfg = materialise(sweep, point, pdir, store)
        lay = cfg.layout
        world = lay.dp * lay.pp * lay.wp * lay.sp
        train = ["--steps", str(sweep.get("steps", 5)), "--out", str(pdir / "run")]
        common = ["--layout", point["layout"], "--config", str(cfg_path), "--ds-config", str(ds_path)]
        if target == "local":
            cmd = [str(REPO_ROOT / "launchers" / "local.sh"), "--nproc", str(world), *common, "--", *train]
        else:
            cmd = [sys.executable, "-m", "aeris_ds.launch", target, "--nodes", str(sweep.get("nodes", 1)), *common,
                   "--submit", "--", *train]
        if dry_run or target != "local":
            script = pdir / "job.sh"
            script.write_text("#!/bin/bash\nset -euo pipefail\n" + shlex.join(cmd) + "\n")
            print(shlex.join(cmd))
            continue
        code, wall, rss = run_local(cmd, timeout, pdir / "log.txt")
        if code:
            print(f"{pdir.name}: failed with exit code {code}", file=sys.stderr)
            continue
        record = collect(pdir, cfg, json.loads(ds_path.read_text()), "cpu",
                         {"machine": machine_name(), "wall_s": wall, "peak_rss_mib": rss})
        with results.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"{pdir.name}: {record['samples_per_s']:.2f} samples/s, {record['tflops_per_device'] * 1e3:.1f} "
              f"GFLOP/s per device, MFU {record['mfu']:.2f}, {wall:.0f} s")
    return results


def scaling(rows: list[dict]) -> list[dict]:
    """Weak/strong scaling efficiency against the 1-rank run of the same model, precision and micro-batch.

    Efficiency = (samples/s ÷ base samples/s) ÷ ranks for both; a run is *strong* scaling when its global
    batch equals the base's (WP/SP/PP split each sample), *weak* when it grows with the ranks (DP).
    """
    def key(r: dict) -> tuple:
        return json.dumps(r["config"]["model"], sort_keys=True), r["precision"], r["zero_stage"], r["micro_batch"]

    bases = {key(r): r for r in rows if r["ranks"] == 1}
    out = []
    for r in rows:
        base = bases.get(key(r))
        kind = None
        if base is not None and r["ranks"] > 1:
            if r["global_batch"] == base["global_batch"]:
                kind = "strong"
            elif r["global_batch"] == base["global_batch"] * r["ranks"]:
                kind = "weak"
        eff = r["samples_per_s"] / base["samples_per_s"] / r["ranks"] if kind else None
        out.append({**r, "scaling": kind, "scaling_efficiency": eff})
    return out


CSV_FIELDS = ["id", "layout", "ranks", "devices", "micro_batch", "accumulation", "global_batch", "zero_stage",
              "precision", "step_time_s", "samples_per_s", "tflops_per_device", "mfu", "peak_rss_mib", "bytes_sp",
              "bytes_wp", "scaling", "scaling_efficiency", "predicted_step_time_s", "machine"]


def report(results: Path, out: Path) -> list[Path]:
    """CSV and PNG plots (scaling efficiency, MFU per layout, time breakdown) of a results file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from aeris_ds.perf.model import Run, cpu_machine, predict

    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{results} holds no results")
    rows = scaling(rows)
    machine = cpu_machine()
    preds = []
    for r in rows:
        cfg = ExperimentConfig(**r["config"])
        p = predict(cfg, machine, Run(r["micro_batch"], r["accumulation"], r["zero_stage"], r["precision"] == "bf16"),
                    nodes=1)
        preds.append(p)
        r["predicted_step_time_s"] = p.step_time
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "results.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    labels = [r["id"] for r in rows]
    x = range(len(rows))

    fig, ax = plt.subplots(figsize=(max(6, len(rows) * 0.9), 4))
    colours = {"weak": "tab:blue", "strong": "tab:orange", None: "lightgrey"}
    ax.bar(x, [r["scaling_efficiency"] or 0 for r in rows], color=[colours[r["scaling"]] for r in rows])
    for kind, c in colours.items():
        if kind:
            ax.bar([], [], color=c, label=f"{kind} scaling")
    ax.axhline(1, color="k", lw=0.5)
    ax.set(ylabel="efficiency vs 1 rank", title="Scaling efficiency")
    ax.set_xticks(list(x), labels, fontsize=7, rotation=30, ha="right")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "scaling.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(6, len(rows) * 0.9), 4))
    ax.bar(x, [r["mfu"] for r in rows])
    ax.set(ylabel="MFU (model FLOP/s ÷ measured GEMM peak)", title="MFU by layout")
    ax.set_xticks(list(x), labels, fontsize=7, rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(out / "mfu.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(6, len(rows) * 0.9), 4))
    bottom = [0.0] * len(rows)
    for part in ("compute", "overhead", "sp", "wp", "pp", "bubble", "grad"):
        vals = [p.times[part] for p in preds]
        ax.bar(x, vals, bottom=bottom, label=part)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.plot(list(x), [r["step_time_s"] for r in rows], "k*", ms=10, label="measured step")
    ax.set(ylabel="seconds per step", title=f"Step time: model breakdown vs measured ({machine.name})")
    ax.set_xticks(list(x), labels, fontsize=7, rotation=30, ha="right")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "breakdown.png", dpi=120)
    plt.close(fig)
    return [csv_path, out / "scaling.png", out / "mfu.png", out / "breakdown.png"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sweep.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_run = sub.add_parser("run", help="run (local) or write job scripts (batch) for every point")
    p_run.add_argument("sweep", type=Path)
    p_run.add_argument("--out", type=Path, required=True)
    p_run.add_argument("--dry-run", action="store_true")
    p_run.add_argument("--timeout", type=float, default=600, help="seconds per local run")
    p_col = sub.add_parser("collect", help="append result lines of finished batch runs (run on the cluster)")
    p_col.add_argument("out", type=Path)
    p_col.add_argument("--device", default="max1550_tile", help="device kind for MFU (flops.PEAKS)")
    p_rep = sub.add_parser("report", help="CSV + PNG plots from a results.jsonl")
    p_rep.add_argument("results", type=Path)
    p_rep.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.cmd == "run":
        run_sweep(args.sweep, args.out, args.dry_run, args.timeout)
    elif args.cmd == "collect":
        with (args.out / "results.jsonl").open("a") as f:
            for pdir in sorted((args.out / "points").iterdir()):
                if (pdir / "run" / "metrics.jsonl").exists():
                    cfg = load_config(pdir / "config.yaml")
                    ds = json.loads((pdir / "ds_config.json").read_text())
                    f.write(json.dumps(collect(pdir, cfg, ds, args.device, {"machine": args.device})) + "\n")
    else:
        for path in report(args.results, args.out):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
