"""Continue a run on another layout or ZeRO stage: DeepSpeed's universal checkpoint, loaded by parameter name.

    aeris-ds checkpoint convert RUN_OR_TAG        (checkpoint.py; also done on the fly by `train --resume-from`)

A tag written by any layout and ZeRO stage 1–3 is converted once by DeepSpeed's ``ds_to_universal`` into
``<checkpoints>/universal/<tag>/zero/<parameter>/{fp32,exp_avg,exp_avg_sq}.pt``: whole tensors by name. A
ZeRO-0 tag (its Adam state is a plain torch state dict, which ``ds_to_universal`` does not read) is written
in the same form here. The conversion goes to a temporary folder renamed when complete, so a kill leaves the
source tag as it was and no half-written conversion is ever read.

Loading does not use DeepSpeed's ``load_universal`` engine path, which cannot take a ZeRO-3 conversion into a
ZeRO-1/2 engine (it looks for ``mp_rank_*`` files), never loads the weights into a ZeRO-0 engine, and looks
parameters up under the live module's names (``layers.3.…`` sequential, ``3.…`` in a PipelineModule).
Instead each rank sets its own part of every parameter it holds through DeepSpeed's fragment API
(``safe_set_full_fp32_param`` / ``safe_set_full_optimizer_state``), or directly under ZeRO-0.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
from pathlib import Path

import deepspeed
import torch
from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state

from aeris_ds.errors import CheckpointError
from aeris_ds.outputs import ensure_space, space_errors
from aeris_ds.weights import canonical

UNIVERSAL = "universal"
MOMENTS = ("exp_avg", "exp_avg_sq")


def universal_path(tag: Path) -> Path:
    return tag.parent / UNIVERSAL / tag.name


def model_states(tag: Path) -> dict:
    """The engine-wide state DeepSpeed saves with every tag: client state, LR schedule, step counters."""
    files = sorted(tag.glob("*mp_rank_00_model_states.pt"))  # mp_rank_00_… (ZeRO 0–2) or zero_pp_rank_0_… (3)
    if not files:
        raise CheckpointError(f"checkpoint {tag} has no mp_rank_00 model states file")
    return _read(files[0])


def convert(tag: Path) -> Path:
    """The universal conversion of a complete tag (made once; reused when present)."""
    out = universal_path(tag)
    if out.exists():
        return out
    if not (tag / "COMPLETE").exists():
        raise CheckpointError(f"checkpoint {tag} is incomplete (no COMPLETE marker): nothing to convert")
    work = out.parent / f".{tag.name}.tmp-{os.getpid()}"
    for stale in out.parent.glob(f".{tag.name}.tmp-*"):  # left by a killed conversion
        shutil.rmtree(stale, ignore_errors=True)
    # Whole fp32 weights and two Adam moments: what the optimizer states hold (ZeRO-0: the model states).
    states = list(tag.glob("*optim_states.pt")) or list(tag.glob("*model_states.pt"))
    rerun = "the conversion starts again"
    ensure_space(out, sum(p.stat().st_size for p in states), "universal checkpoint", rerun)
    (work / tag.name).mkdir(parents=True)
    try:
        with space_errors(out, rerun):
            if any(tag.glob("*optim_states.pt")):
                _ds_to_universal(tag, work / tag.name)
            else:
                _convert_zero0(tag, work / tag.name)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)  # a part would only take space: the source tag is intact
        raise
    os.replace(work / tag.name, out)
    shutil.rmtree(work, ignore_errors=True)  # what ds_to_universal writes beside its output (latest_universal)
    return out


def _ds_to_universal(tag: Path, out: Path) -> None:
    from deepspeed.checkpoint.ds_to_universal import main

    # In-process and serial: no worker pool inside a training job; its progress output is noise here.
    args = argparse.Namespace(input_folder=str(tag), output_folder=str(out), num_extract_workers=1,
                              num_merge_workers=1, keep_temp_folder=False, strict=True, inject_missing_state=True)
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        main(args)


def _convert_zero0(tag: Path, out: Path) -> None:
    """ZeRO-0 keeps torch's optimizer state dict (indexed in parameter order) in each stage's mp_rank file."""
    weights: dict[str, torch.Tensor] = {}
    for path in sorted(tag.glob("layer_*-model_states.pt")):  # PipelineModule: one file per layer, in order
        index = int(path.name.removeprefix("layer_").split("-")[0])
        weights.update({f"{index}.{k}": v for k, v in _read(path).items()})
    optimizers = []
    for path in sorted(tag.glob("mp_rank_*_model_states.pt")):  # one per stage, in order
        state = _read(path)
        weights.update(state["module"] or {})  # the sequential module (None under the pipeline engine)
        optimizers.append(state["optimizer"])
    moments = [o["state"].get(i, {}) for o in optimizers for g in o["param_groups"] for i in g["params"]]
    if len(moments) != len(weights):
        raise CheckpointError(f"checkpoint {tag}: {len(weights)} parameters but {len(moments)} optimizer entries")
    (out / "zero").mkdir()
    for (name, value), state in zip(weights.items(), moments):
        folder = out / "zero" / name
        folder.mkdir()
        torch.save({"param": value.float()}, folder / "fp32.pt")
        for key in MOMENTS:
            torch.save({"param": state.get(key, torch.zeros_like(value, dtype=torch.float32))}, folder / f"{key}.pt")
        torch.save(state.get("step", torch.tensor(0.0)), folder / "step.pt")
    hyper = {k: v for k, v in optimizers[0]["param_groups"][0].items() if k != "params"}
    torch.save({"param_groups": [hyper]}, out / "zero" / "optimizer_state.pt")


def _read(path: Path):
    return torch.load(path, map_location="cpu", weights_only=False)


def _tensor(folder: Path, key: str) -> torch.Tensor:
    value = _read(folder / f"{key}.pt")
    return value["param"] if isinstance(value, dict) else value  # ZeRO-3 conversions store the bare flat tensor


def load(engine, tag: Path) -> dict:
    """Weights, Adam moments and step, LR schedule and DeepSpeed's counters from the universal conversion
    of ``tag`` into an engine of any layout and ZeRO stage; returns the tag's client state."""
    zero = universal_path(tag) / "zero"
    saved = {canonical(p.name): p for p in zero.iterdir() if p.is_dir()}
    params = [(canonical(n), p) for n, p in engine.module.named_parameters() if p.requires_grad]
    missing = [n for n, _ in params if n not in saved]
    if missing:
        raise CheckpointError(f"checkpoint {tag} lacks parameters {missing[:5]}")
    zero3 = any(hasattr(p, "ds_id") for _, p in params)
    values = {}
    for name, p in params:
        shape = p.ds_shape if zero3 else p.shape
        values[name] = {key: _tensor(saved[name], key).reshape(shape) for key in ("fp32", *MOMENTS)}
    # The working weights: ZeRO-3 gathers each parameter, lets rank 0's copy win and partitions it again.
    with deepspeed.zero.GatheredParameters([p for _, p in params], modifier_rank=0, enabled=zero3), torch.no_grad():
        for name, p in params:
            p.copy_(values[name]["fp32"])
    optimizer = engine.optimizer
    base = getattr(optimizer, "optimizer", optimizer)  # ZeRO wraps torch's optimizer; ZeRO-0 uses it directly
    for group in base.param_groups:  # Adam creates its state at the first step: create it now
        for hp in group["params"]:
            if not base.state[hp]:
                base.state[hp].update(step=torch.tensor(0.0), exp_avg=torch.zeros_like(hp),
                                      exp_avg_sq=torch.zeros_like(hp))
    if hasattr(optimizer, "_lazy_init_hp_params_optimizer_state"):  # ZeRO-1/2: link fragments to that state
        optimizer._lazy_init_hp_params_optimizer_state()
    for name, p in params:
        if engine.zero_optimization():
            safe_set_full_fp32_param(p, values[name]["fp32"])
            for key in MOMENTS:
                safe_set_full_optimizer_state(p, values[name][key], key)
        else:
            for key in MOMENTS:
                base.state[p][key].copy_(values[name][key])
    step = _adam_step(zero, saved[params[0][0]])
    hyper = _read(zero / "optimizer_state.pt")["param_groups"][0]
    for group in base.param_groups:
        group.update({k: v for k, v in hyper.items() if k != "params"})  # lr: where the schedule left it
        for hp in group["params"]:
            base.state[hp]["step"] = step.clone()
    states = model_states(tag)
    if engine.lr_scheduler is not None and states.get("lr_scheduler") is not None:
        engine.lr_scheduler.load_state_dict(states["lr_scheduler"])
    engine.global_steps = states["global_steps"]
    engine.global_samples = states.get("global_samples", 0)
    engine.skipped_steps = states.get("skipped_steps", 0)
    return states


def _adam_step(zero: Path, folder: Path) -> torch.Tensor:
    """Adam's step count: per parameter (ZeRO-1/2 conversions) or in the optimizer state (ZeRO-3)."""
    if (folder / "step.pt").exists():
        step = _read(folder / "step.pt")
    else:
        step = _read(zero / "optimizer_state.pt")["optimizer_state_dict"]["state"][0]["step"]
    return torch.as_tensor(step, dtype=torch.float32)
