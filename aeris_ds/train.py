"""Train the AERIS Swin diffusion transformer with DeepSpeed, on any SWiPe layout.

    deepspeed --num_gpus 4 -m aeris_ds.train --config small --deepspeed_config ds_configs/zero1_fp32.json
    torchrun --nproc_per_node 4 -m aeris_ds.train --config small --layout wp=2,sp=2

One process is the layout DP = PP = WP = SP = 1 of the same code.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import deepspeed
import numpy as np
import torch
import torch.distributed as dist
from deepspeed.accelerator import get_accelerator
from tqdm import tqdm

from aeris_ds import checkpoint
from aeris_ds.args import (
    ArgumentParser,
    config_ref,
    ds_config_file,
    existing_path,
    non_negative_int,
    output_path,
    positive_float,
    positive_int,
)
from aeris_ds.budget import TimeBudget, fit_schedule, stretch_schedule, warmup_steps
from aeris_ds.config import ExperimentConfig, load_config, load_ds_config, parse_layout
from aeris_ds.data.source import WeatherSource
from aeris_ds.data.stats import load_stats
from aeris_ds.diffusion.objective import Objective, diffusion, token_loss, training_objective
from aeris_ds.ema import EMA
from aeris_ds.errors import ConfigError, DataError, LayoutError, log_to, run_command
from aeris_ds.examples import MicroBatches, TrainingExamples, micro_batch_loader
from aeris_ds.model.compiled import compile_blocks
from aeris_ds.model.swin_dit import build_model, layer_specs, position_encoding
from aeris_ds.outputs import atomic_replace, space_errors
from aeris_ds.parallel.layout import WindowGrid
from aeris_ds.parallel.mappings import BYTES_SENT, reset_byte_counters
from aeris_ds.parallel.router import WindowRouting
from aeris_ds.parallel.state import end_distributed, init_distributed, init_parallel, validate_layout
from aeris_ds.perf.flops import cpu_gemm_rate, native_bf16, peak_flops, step_flops
from aeris_ds.weights import gather_weights, load_initial, save_weights


def batch_sizes(ds_config: dict, replica: int, dp: int, source: str = "DeepSpeed config") -> tuple[int, int]:
    """(micro, accumulation) in distinct samples per DP rank; sets DeepSpeed's own train_batch_size.

    DeepSpeed counts micro × accumulation × (DP·WP·SP) because its data axis holds the WP and SP ranks
    too; they share samples, so the distinct global batch is micro × accumulation × DP.
    """
    micro = int(ds_config.get("train_micro_batch_size_per_gpu", 1))
    acc = int(ds_config.get("gradient_accumulation_steps", 1))
    given = ds_config.get("train_batch_size")
    if given is not None and given != micro * acc * dp:
        raise ConfigError(f"{source}: train_batch_size={given} must equal micro {micro} × accumulation {acc} × DP {dp} "
                         "(distinct samples; WP and SP ranks share samples)")
    ds_config["train_batch_size"] = micro * acc * replica
    return micro, acc


def check_engine(cfg: ExperimentConfig, ds_config: dict, pipeline: bool) -> None:
    stage = ds_config.get("zero_optimization", {}).get("stage", 0)
    if pipeline and cfg.diffusion.objective != "diffusion":
        raise LayoutError(f"diffusion.objective={cfg.diffusion.objective} runs the network more than once per "
                          f"micro-batch, which DeepSpeed's pipeline engine cannot (PP={cfg.layout.pp}): use PP=1")
    if pipeline and stage > 1:
        raise ConfigError(f"{cfg.train.ds_config}: ZeRO stage {stage} cannot run with DeepSpeed's pipeline engine "
                          f"(PP={cfg.layout.pp}); use ZeRO-0/1 with PP, or PP=1 for ZeRO-2/3")
    if pipeline and stage == 0 and ds_config.get("gradient_clipping", 0) > 0:
        raise ConfigError(f"{cfg.train.ds_config}: gradient clipping with the pipeline engine needs ZeRO-1: "
                          "under ZeRO-0 DeepSpeed takes the gradient norm of stage 0 only")


def resolve_store(cfg: ExperimentConfig) -> Path:
    """The configured store, or the embedded Held–Suarez data (generated once, on rank 0, when missing)."""
    if cfg.data.store:
        return Path(cfg.data.store)
    from aeris_ds.data.embedded import ensure_embedded

    return ensure_embedded(cfg)


def signature(cfg: ExperimentConfig) -> dict:
    model = cfg.model.model_dump(exclude={"checkpoint_activations"})
    return {"model": model, "channels": cfg.data.channel_names, "forcings": cfg.data.forcings,
            "grid": [cfg.grid.lat, cfg.grid.lon], "layout": str(cfg.layout.as_layout())}


def apply_precision(setting: str | bool | None, ds_config: dict, source: str) -> None:
    """Set the DeepSpeed config's bf16 section from train.bf16 (see TrainConfig). "auto" leaves a config that says
    its precision (a bf16 or fp16 section) as it is, and otherwise turns bf16 on only where the device has it
    natively: emulated bf16 is slower than fp32."""
    if setting is None or (setting == "auto" and ("bf16" in ds_config or "fp16" in ds_config)):
        return
    enabled = native_bf16() if setting == "auto" else bool(setting)
    if enabled and ds_config.get("fp16", {}).get("enabled"):
        raise ConfigError(f"{source}: fp16 is enabled, so train.bf16 cannot be true as well")
    ds_config["bf16"] = {**ds_config.get("bf16", {}), "enabled": enabled}


def setup(cfg: ExperimentConfig, ds_config: dict, config_ref: str | None = None):
    """Everything before the first step: distributed init, layout, data, model, engine."""
    init_distributed()
    layout = cfg.layout.as_layout()
    pipeline = cfg.layout.pp > 1
    check_engine(cfg, ds_config, pipeline)
    apply_precision(cfg.train.bf16, ds_config, cfg.train.ds_config)
    geometry = WindowGrid(cfg.grid.lat, cfg.grid.lon, cfg.model.window, assignment=cfg.layout.window_assignment,
                          lat_mode=cfg.model.lat_mode)
    grid = validate_layout(layout, dist.get_world_size(), geometry, cfg.model.heads, cfg.model.depth)
    ps = init_parallel(layout)

    store = resolve_store(cfg)
    source = WeatherSource(store, cfg.data, cfg.data.train_split, grid=(cfg.grid.lat, cfg.grid.lon),
                           steps=cfg.diffusion.rollout_steps)
    stats = load_stats(store, cfg.data.channel_names, cfg.data.lead_hours, config_ref or cfg.name, cfg.data.stats)

    routing = WindowRouting(grid, ps.wp, ps.sp, cfg.layout.shift_exchange, ps.sp_group, ps.window_group)
    position = position_encoding(source.lat, source.lon, routing.home_ids, cfg.model.pos_freqs)
    model = build_model(layer_specs(cfg, routing, position), pipeline, layout.pp, ps.topology(),
                        token_loss(cfg), cfg.train.seed)
    if cfg.diffusion.init_weights:  # before DeepSpeed copies the parameters into its optimizer
        load_initial(model, cfg.diffusion.init_weights, cfg.diffusion.objective)
    if cfg.train.compile:
        compile_blocks(model, say=dist.get_rank() == 0)
    micro, acc = batch_sizes(ds_config, layout.replica, layout.dp, cfg.train.ds_config)
    # DeepSpeed keeps the last pipeline engine's grid as a global; a later engine in the same process
    # (sweeps, tests) must not inherit it.
    deepspeed.utils.groups.mpu = None
    schedule = ds_config.get("scheduler", {}).get("params", {})
    if ds_config.get("scheduler", {}).get("type") == "WarmupCosineLR":
        schedule.setdefault("total_num_steps", max(1, cfg.train.steps))  # the cosine spans the run
    engine, *_ = deepspeed.initialize(model=model, model_parameters=[p for p in model.parameters()
                                                                       if p.requires_grad], config=ds_config)
    dtype = torch.bfloat16 if engine.bfloat16_enabled() else torch.float32
    examples = TrainingExamples(source, stats, cfg, grid, ps.wp, ps.sp, cfg.train.seed)
    batches = MicroBatches(examples, micro, acc, layout.dp, ps.dp, dtype)
    return engine, ps, batches, pipeline, micro * acc * layout.dp


def train_step(engine, batches_iter, pipeline: bool, replica_group, objective: Objective = diffusion,
               step: int = 0) -> tuple[float, float]:
    """One optimizer step over all accumulation micro-batches; returns (global mean loss, gradient norm)."""
    if pipeline:
        return float(engine.train_batch(data_iter=batches_iter)), float(engine.get_global_grad_norm())
    device = engine.device
    total, norm = 0.0, float("nan")
    for micro in range(engine.gradient_accumulation_steps()):
        inputs, labels = next(batches_iter)
        loss = objective(engine, tuple(a.to(device) for a in inputs), tuple(a.to(device) for a in labels), step)
        engine.backward(loss)
        if micro == engine.gradient_accumulation_steps() - 1 and engine.zero_optimization_stage() == 0:
            # ZeRO-0 clips without keeping the norm; the gradients are already averaged here.
            norm = float(torch.nn.utils.get_total_norm([p.grad for p in engine.module.parameters()
                                                        if p.grad is not None]))
        engine.step()
        total += loss.detach().float()
    total = total / engine.gradient_accumulation_steps()
    dist.all_reduce(total, group=replica_group)
    if engine.get_global_grad_norm() is not None:
        norm = float(engine.get_global_grad_norm())
    return float(total) / dist.get_world_size(replica_group), norm


def device_peak(dtype: torch.dtype) -> float:
    """Peak FLOP/s of this rank's device for MFU: the vendor table, or the CPU's GEMM rate measured now."""
    accelerator = get_accelerator()
    if accelerator.device_name() == "cpu":
        return cpu_gemm_rate("bf16" if dtype == torch.bfloat16 else "fp32")
    device = getattr(torch, accelerator.device_name(), None)  # torch.cuda or torch.xpu (ROCm is torch.cuda)
    name = device.get_device_name().lower() if device is not None and device.is_available() else ""
    for key, kind in (("h200", "h200"), ("h100", "h100"), ("mi250", "mi250x_gcd"), ("max 1550", "max1550_tile")):
        if key in name:
            return peak_flops(kind, dtype)
    return float("nan")


def run(cfg: ExperimentConfig, ds_config: dict, config_ref: str | None = None) -> dict:
    """Train for cfg.train.steps (resuming from the last complete checkpoint); returns a summary.

    ``config_ref``: the preset name or YAML path the config came from, for hints in error messages."""
    t0 = time.time()  # the time budget counts start-up, data loading and compiling too
    out = Path(cfg.train.out_dir)
    ckpt_dir = out / "checkpoints"
    checkpoint.ensure_writable(ckpt_dir)
    engine, ps, batches, pipeline, global_batch = setup(cfg, ds_config, config_ref)
    objective = training_objective(cfg, ps.window_group, torch.from_numpy(batches.ex.tendency_scale))
    ema = EMA(engine.module, cfg.train.ema_decay, cfg.train.ema_length)
    precision = "bf16" if engine.bfloat16_enabled() else "fp16" if engine.fp16_enabled() else "fp32"
    sig = {**signature(cfg), "global_batch": global_batch, "precision": precision}  # data position: in steps
    start, plan = checkpoint.load(ckpt_dir, engine, ema, sig, cfg.train.resume_from)
    budget = TimeBudget(cfg.train.max_minutes, cfg.train.steps, start, warmup_steps(engine.lr_scheduler), t0,
                        plan.get("total_steps"))
    # A resumed plan's scheduler total (the iteration comes back with the scheduler's state), else the run's steps
    schedule_total = plan.get("schedule_total")
    stretch_schedule(engine.lr_scheduler, schedule_total or budget.total)
    acc = engine.gradient_accumulation_steps()
    # Only the first and last pipeline stages read data (inputs and targets).
    reads = not pipeline or engine.is_first_stage() or engine.is_last_stage()
    loader = iter(micro_batch_loader(batches, start * acc, cfg.data.workers)) if reads else None
    rank0 = dist.get_rank() == 0
    logger = RunLogger(out, cfg, enabled=rank0, start=start)
    bar = tqdm(total=budget.total, initial=start, desc="train", disable=not rank0, dynamic_ncols=True)
    flops_per_step = step_flops(cfg) * global_batch / dist.get_world_size()  # per device
    peak = device_peak(torch.bfloat16 if engine.bfloat16_enabled() else torch.float32)
    started, step, history, cut = time.time(), start, [], False
    try:  # the progress bar ends its line before an error is printed
        while step < budget.total:
            reset_byte_counters()
            tick = time.time()
            loss, norm = train_step(engine, loader, pipeline, ps.replica_group, objective, step)
            if not math.isfinite(loss):
                raise DataError(non_finite_message(loss, step, batches), every_rank=True)
            step += 1
            ema.update(step)
            seconds = time.time() - tick
            record = {"step": step, "loss": loss, "grad_norm": norm, "lr": engine.get_lr()[0],
                      "step_s": seconds, "samples_per_s": global_batch / seconds,
                      "tflops_per_device": flops_per_step / seconds / 1e12, "mfu": flops_per_step / seconds / peak,
                      **{f"bytes_{axis}": int(n) for axis, n in BYTES_SENT.items()}}
            logger.log(record)
            history.append(record)
            bar.update()
            bar.set_postfix(loss=f"{loss:.4f}")
            budget.record(step, seconds)
            if budget.due(step) and budget.accept(step, _agree(budget.propose(step))):  # rank 0's clock decides
                schedule_total = fit_schedule(engine.lr_scheduler, budget.planned - step)
                bar.total = budget.planned
                if rank0:
                    again = f" (re-planned at step {step})" if len(budget.plans) > 1 else ""
                    tqdm.write(f"time budget: {budget.planned} steps fit in {cfg.train.max_minutes} min "
                               f"at {budget.step_s:.3f} s/step; the LR schedule ends there{again}")
            # Past the budget before the plan: the plan gives one more step, and the schedule ends there.
            cut = budget.planned is not None and step < budget.total and bool(_agree(budget.overrun()))
            every = cfg.train.checkpoint_every
            if (every and step % every == 0) or step == budget.total or cut:
                checkpoint.save(ckpt_dir, engine, ema, step, sig,
                                plan={"total_steps": budget.planned, "schedule_total": schedule_total})
            if cut:
                if rank0:
                    tqdm.write(f"time budget: stopping at step {step} of {budget.total}, well past "
                               f"{cfg.train.max_minutes} min (the machine slowed down after the plan)")
                break
    finally:
        bar.close()
        logger.close()
    weights = gather_weights(engine.module, ema, ps)
    summary = {"steps": step, "samples_seen": step * global_batch, "planned_steps": budget.total,
               "schedule_complete": step >= budget.total, "final_lr": float(engine.get_lr()[0]),
               "precision": precision,
               "step_s_planned": budget.step_s, "plans": budget.plans, "budget_minutes": cfg.train.max_minutes,
               "history": history,
               "wall_s": time.time() - started, "total_s": time.time() - t0, "checkpoint": str(ckpt_dir),
               "weights": str(out / "weights.pt")}
    if rank0:
        gains = batches.ex.noise_gains
        save_weights(weights, out / "weights.pt", {"config": cfg.model_dump(mode="json"), "step": step,
                                                 "objective": cfg.diffusion.objective,
                                                 "noise_gains": None if gains is None else gains.tolist()})
        (out / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=1))
    return summary


def non_finite_message(loss: float, step: int, batches: MicroBatches) -> str:
    """Name the step (as metrics.jsonl counts it) and the samples it read, with their times and store."""
    source = batches.ex.source
    samples = batches.step_samples(step)
    times = np.datetime_as_string(source.times[[source.time_index(s) for s in samples]], unit="m")
    listed = ", ".join(f"{s} ({t})" for s, t in zip(samples, times, strict=True))
    return (f"loss is {loss} at step {step + 1}, which read samples {listed} of {source.path} "
            f"(initial times; each target is {batches.ex.cfg.data.lead_hours} h later): "
            "stopping before the weights are saved")


def _agree(value: int) -> int:
    """Every rank must take the same branch (and plan the same steps): rank 0's clock decides."""
    t = torch.tensor([int(value)], dtype=torch.int64)
    dist.broadcast(t, 0)
    return int(t.item())


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the records up to the resumed ``step``: the steps after it are about to run again.

    Rewritten by atomic rename; a line cut short by a crash is dropped too."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue
    with atomic_replace(path) as tmp:
        tmp.write_text("".join(kept))


RESUMES = "training resumes from its last complete checkpoint"


class RunLogger:
    """Metrics to a JSONL file and to wandb (offline by default: no network needed)."""

    def __init__(self, out: Path, cfg: ExperimentConfig, enabled: bool, start: int = 0):
        self.enabled = enabled
        self.wandb = None
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        self.path = path = out / "metrics.jsonl"
        truncate_metrics(path, start)
        self.file = open(path, "a")  # noqa: SIM115 - kept open for the whole run
        if cfg.train.wandb_mode != "disabled":
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self.wandb = wandb.init(project="aeris-ds", name=cfg.name, dir=str(out), mode=cfg.train.wandb_mode,
                                    config=cfg.model_dump(mode="json"), resume="allow")

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with space_errors(self.path, RESUMES):  # a line cut short is dropped on resume
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        if self.wandb is not None:
            self.wandb.log(record, step=record["step"])

    def close(self) -> None:
        if self.enabled:
            with space_errors(self.path, RESUMES):  # what a failed log left in the buffer
                self.file.close()
            if self.wandb is not None:
                self.wandb.finish()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(prog="aeris-ds train", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small", type=config_ref, help="preset name or YAML path")
    parser.add_argument("--layout", default=None, type=parse_layout,
                        help="e.g. dp=2,pp=2,wp=1,sp=1 (overrides the YAML)")
    parser.add_argument("--steps", type=positive_int, default=None)
    parser.add_argument("--out", default=None, type=output_path, help="run directory (overrides train.out_dir)")
    parser.add_argument("--store", default=None, type=existing_path,
                        help="WeatherBench2-schema zarr (overrides data.store)")
    parser.add_argument("--max-minutes", type=positive_float, default=None)
    parser.add_argument("--init-weights", default=None, metavar="WEIGHTS", type=existing_path,
                        help="weights.pt to start from (overrides diffusion.init_weights)")
    parser.add_argument("--resume-from", default=None, metavar="RUN_OR_TAG", type=existing_path,
                        help="start from this run's last checkpoint (or this tag), on any layout and ZeRO stage")
    parser.add_argument("--local_rank", type=non_negative_int, default=int(os.environ.get("LOCAL_RANK", 0)))
    # DeepSpeed's own two arguments (deepspeed.add_config_arguments), the JSON checked at the door
    group = parser.add_argument_group("DeepSpeed")
    group.add_argument("--deepspeed", action="store_true", help="accepted for DeepSpeed scripts; no effect")
    group.add_argument("--deepspeed_config", default=None, type=ds_config_file,
                       help="DeepSpeed JSON (overrides train.ds_config)")
    return parser.parse_args(argv)


def overrides_from(args: argparse.Namespace) -> dict:
    over: dict = {}
    if args.layout:
        over["layout"] = args.layout
    train = {k: v for k, v in (("steps", args.steps), ("out_dir", args.out), ("max_minutes", args.max_minutes),
                               ("resume_from", args.resume_from)) if v is not None}
    if args.deepspeed_config:
        train["ds_config"] = args.deepspeed_config
    if train:
        over["train"] = train
    if args.store:
        over["data"] = {"store": args.store}
    if args.init_weights:
        over["diffusion"] = {"init_weights": args.init_weights}
    return over


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config, overrides_from(args))
    log_to(Path(cfg.train.out_dir) / "error.log")
    ds_config = load_ds_config(cfg.train.ds_config)
    get_accelerator()  # resolve the accelerator (CPU, CUDA, XPU) before DeepSpeed initialises
    try:
        run(cfg, ds_config, args.config)
    finally:
        end_distributed()


if __name__ == "__main__":  # under torchrun / the deepspeed launcher: one line per user error, exit code 2
    raise SystemExit(run_command(main))
