"""Layout-independent weights: gather every stage's parameters (and EMA) into one state dict.

PipelineModule names a layer's parameters ``"<layer>.<param>"``, the sequential module
``"layers.<layer>.<param>"``; the canonical name is the former, so a file written by any layout loads into
any other (the forecast runs with its own layout).
"""

from __future__ import annotations

from pathlib import Path

import deepspeed
import torch
import torch.distributed as dist
from torch import nn

from aeris_ds.ema import EMA
from aeris_ds.errors import CheckpointError, ConfigError, MissingPathError
from aeris_ds.outputs import atomic_replace, ensure_space
from aeris_ds.parallel.state import ParallelState


def canonical(name: str) -> str:
    return name.removeprefix("layers.")


def gather_weights(module: nn.Module, ema: EMA, ps: ParallelState) -> dict[str, dict[str, torch.Tensor]] | None:
    """{"params": …, "ema": …} with canonical names on rank 0 (None elsewhere); collective over the world."""
    holds = ps.dp == 0 and ps.wp == 0 and ps.sp == 0  # one copy of each stage
    params = list(module.named_parameters())
    zero3 = any(hasattr(p, "ds_id") for _, p in params)
    with deepspeed.zero.GatheredParameters([p for _, p in params], enabled=zero3):
        mine = {canonical(n): p.detach().float().cpu().clone() for n, p in params} if holds else {}
    ema_mine = {canonical(n): t.cpu() for n, t in ema.state_dict().items()} if holds else {}
    everyone = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object((mine, ema_mine), everyone, dst=0)
    if everyone is None:
        return None
    out: dict[str, dict[str, torch.Tensor]] = {"params": {}, "ema": {}}
    for p, e in everyone:
        out["params"].update(p)
        out["ema"].update(e)
    return out


def save_weights(weights: dict, path: str | Path, meta: dict) -> Path:
    """Write ``weights`` and ``meta``; refused before writing when the tensors do not fit the free space, and
    replaced atomically (a write that runs out of space leaves the previous file)."""
    path = Path(path)
    need = sum(t.numel() * t.element_size() for part in weights.values() for t in part.values())
    rerun = "training resumes from its last checkpoint and writes them again"
    ensure_space(path, need, "weights file", rerun)
    with atomic_replace(path, rerun) as tmp:
        torch.save({**weights, "meta": meta}, tmp)
    return path


def load_weights(path: str | Path) -> dict:
    """A weights file written by save_weights, with a named error when it is missing or not one."""
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"weights file {path} does not exist")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises several types for a truncated or foreign file
        raise CheckpointError(f"weights file {path} is damaged or not a torch file ({err})") from None
    if not isinstance(saved, dict) or not {"params", "ema", "meta"} <= set(saved):
        raise CheckpointError(f"{path} is not a weights file of aeris-ds train (needs params, ema and meta)")
    return saved


def load_into(module: nn.Module, state: dict[str, torch.Tensor], source: str | Path = "weights file") -> None:
    """Load canonical-named weights into a sequential or pipeline module (its own stage's part)."""
    own = {canonical(n): p for n, p in module.named_parameters()}
    missing = [n for n in own if n not in state]
    if missing:
        raise CheckpointError(f"{source} lacks {missing[:5]}{'…' if len(missing) > 5 else ''}")
    with torch.no_grad():
        for name, p in own.items():
            if p.shape != state[name].shape:
                raise CheckpointError(f"{name}: {source} has shape {tuple(state[name].shape)}, "
                                      f"model {tuple(p.shape)}")
            p.copy_(state[name])


def load_initial(module: nn.Module, path: str | Path, objective: str = "diffusion") -> None:
    """Start training from a weights file's EMA (e.g. a consistency model from its diffusion model).

    crps_finetune rolls out the one-step consistency sampler, so it must start from consistency weights."""
    saved = load_weights(path)
    if objective == "crps_finetune" and objective_of(saved) == "diffusion":
        raise ConfigError(f"diffusion.init_weights {path} holds a diffusion model; crps_finetune fine-tunes a "
                          "one-step model: start from consistency weights (diffusion.objective: consistency)")
    load_into(module, saved["ema"], f"diffusion.init_weights {path}")


def objective_of(saved: dict) -> str:
    """The training objective that wrote a weights file (files from before objectives: diffusion)."""
    return saved["meta"].get("objective", "diffusion")
