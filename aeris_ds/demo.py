"""The main job: embedded data → SWiPe training on local CPU ranks → ensemble forecast → scorecard and plots.

Every stage is the same command a user would run by hand; each is skipped when its output is already
there, so rerunning the job continues where it stopped.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from aeris_ds.args import (
    ArgumentParser,
    config_ref,
    init_times,
    lead,
    lead_steps,
    output_path,
    parse_duration,
    positive_float,
    positive_int,
    sampler,
)
from aeris_ds.config import load_config
from aeris_ds.errors import ConfigError, run_command
from aeris_ds.stage_times import StageTimes

STAGES = ["install", "data", "stats", "train", "forecast", "score"]


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _launch(nproc: int, module: str, args: list[str], launcher: str) -> None:
    """Run a module on local ranks with the deepspeed launcher (or torchrun), one thread per rank."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
    bindir = Path(sys.executable).parent
    if launcher == "deepspeed" and (bindir / "deepspeed").exists():
        cmd = [str(bindir / "deepspeed"), "--num_accelerators", str(nproc), "--master_port", _port(),
               "--module", module, *args]
    else:
        cmd = [str(bindir / "torchrun"), "--nproc_per_node", str(nproc), "--master_port", _port(),
               "-m", module, *args]
    print("+", " ".join(cmd), flush=True)
    code = subprocess.run(cmd, env=env, check=False).returncode
    if code:  # the stage printed its own error line; no traceback of ours on top of it
        raise SystemExit(code)


def plot_loss(metrics: Path, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    last: dict[int, float] = {}
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        last[record["step"]] = record["loss"]  # a resumed run rewrites steps after its checkpoint
    steps = sorted(last)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, [last[s] for s in steps], lw=0.8)
    ax.set(xlabel="step", ylabel="TrigFlow v-loss (weighted MSE)", yscale="log", title="training loss")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(prog="aeris-ds demo", description=__doc__)
    p.add_argument("--config", default="small", type=config_ref, help="preset name or YAML path")
    p.add_argument("--nproc", type=positive_int, default=2, help="local ranks (the preset's layout must use them all)")
    p.add_argument("--minutes", type=positive_float, default=15.0,
                   help="training wall-time budget (minutes, start-up included): the step count and LR schedule fit it")
    p.add_argument("--store", default="data/heldsuarez.zarr", type=output_path,
                   help="the embedded data: generated when missing")
    p.add_argument("--run", default="runs/demo", type=output_path)
    # Sized for 2 CPU cores with the preset's 24 h model: 20 × 8 (init, member) rows × 10 steps × 9 network
    # evaluations per step (5 sampler levels).
    p.add_argument("--members", type=positive_int, default=8)
    p.add_argument("--init-times", default="test:20", type=init_times)
    p.add_argument("--lead", default="10d", type=lead, help="a multiple of the config's model step")
    # Rows per network call: a call on 40 full-grid rows runs ~1.6× slower per row than on ≤ 16 on this CPU
    # (activations outgrow the cache), so a rank's rows go in a few smaller batches.
    p.add_argument("--batch", type=positive_int, default=10, help="(init, member) rows per network call on a rank")
    p.add_argument("--sampler", default="", metavar="KEY=VALUE,…", type=sampler,
                   help="forecast sampler overrides (default: the preset's sampler section)")
    p.add_argument("--launcher", choices=["deepspeed", "torchrun"], default="deepspeed")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    # What the config decides, checked before the first stage starts
    lead_steps(parse_duration(args.lead), cfg.data.lead_hours, args.config)
    if cfg.layout.as_layout().world != args.nproc:
        raise ConfigError(f"argument --nproc: {args.nproc} ranks, but the layout of {args.config} "
                          f"({cfg.layout.as_layout()}) needs {cfg.layout.as_layout().world}")
    store, run = Path(args.store), Path(args.run)

    from aeris_ds.data import embedded

    times = StageTimes(run / "timings.json", STAGES)
    print(f"[1/4] data: {store}", flush=True)
    if embedded.is_ready(store):
        times.skip("data")
        times.skip("stats")
    else:
        with times("data"):
            embedded.generate_store(store)
        with times("stats"):
            embedded.write_stats(store, cfg)

    weights = run / "weights.pt"
    print(f"[2/4] train {cfg.name} on {args.nproc} ranks ({cfg.layout.as_layout()}), ≤ {args.minutes} min", flush=True)
    if weights.exists():
        times.skip("train")
    else:
        with times("train"):
            _launch(args.nproc, "aeris_ds.train", ["--config", args.config, "--store", str(store), "--out",
                                                   str(run), "--max-minutes", str(args.minutes)], args.launcher)
    loss_png = plot_loss(run / "metrics.jsonl", run / "loss.png")

    forecast = run / "forecast.zarr"
    print(f"[3/4] forecast: {args.members} members × {args.init_times} init times, lead {args.lead}", flush=True)
    done = run / "forecast.done"
    if done.exists():
        times.skip("forecast")
    else:
        with times("forecast"):
            _launch(args.nproc, "aeris_ds.forecast.driver",
                    ["--weights", str(weights), "--store", str(store), "--out", str(forecast), "--members",
                     str(args.members), "--init-times", args.init_times, "--lead", args.lead,
                     "--sampler", args.sampler, "--batch", str(args.batch)], "torchrun")
        done.write_text("ok")

    print("[4/4] scores", flush=True)
    scores = run / "scores"
    from aeris_ds.data.schema import open_store
    from aeris_ds.evaluate.cli import main as evaluate

    train = open_store(store).attrs["split_train"]
    with times("score"):
        evaluate([str(forecast), "--truth", str(store), "--out", str(scores), "--climatology-from", train,
                  "--overwrite"])
    print(f"\nloss curve: {loss_png}\nforecast:   {forecast}\nscorecard:  {scores}/scorecard.txt\n"
          f"plots:      {scores}/*.png\ntimings:    {times.write()}\n\n{times.table()}")


if __name__ == "__main__":
    raise SystemExit(run_command(main))
