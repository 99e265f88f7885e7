"""Exponential moving average of the weights this rank holds (the forecast uses these)."""

from __future__ import annotations

import deepspeed
import torch
from torch import nn


class EMA:
    def __init__(self, module: nn.Module, decay: float):
        self.module, self.decay = module, decay
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.zero3 = any(hasattr(p, "ds_id") for p in self.params)
        with self._gathered():
            self.shadow = [p.detach().float().clone() for p in self.params]

    def _gathered(self):
        """ZeRO-3 keeps only a shard of each parameter: gather the whole one for the update."""
        return deepspeed.zero.GatheredParameters(self.params, enabled=self.zero3)

    @torch.no_grad()
    def update(self) -> None:
        with self._gathered():
            for s, p in zip(self.shadow, self.params):
                s.lerp_(p.detach().float(), 1 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        names = {id(p): n for n, p in self.module.named_parameters()}
        return {names[id(p)]: s for p, s in zip(self.params, self.shadow)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        own = self.state_dict()
        if own.keys() != state.keys():
            raise ValueError("EMA state does not match the model's parameters")
        for name, s in own.items():
            s.copy_(state[name])
