"""Moving average of the weights this rank holds (the forecast uses these).

Two profiles: a constant decay (``train.ema_decay``), or the power-function average of Karras et al. (2024,
EDM2) whose width is a fixed fraction ``train.ema_length`` of the run so far (its relative std σ_rel). A constant
decay of 0.995 still holds 5 % of the random initial weights after 600 steps; the power average has no such
memory and means the same on a short budget as on a long one.
"""

from __future__ import annotations

import deepspeed
import numpy as np
import torch
from torch import nn


def power_gamma(sigma_rel: float) -> float:
    """The exponent γ of the power average with relative std ``sigma_rel`` (EDM2, eq. 3 solved for γ)."""
    t = sigma_rel ** -2
    return float(np.roots([1, 7, 16 - t, 12 - t]).real.max())


class EMA:
    def __init__(self, module: nn.Module, decay: float, length: float | None = None):
        self.module, self.decay = module, decay
        self.gamma = power_gamma(length) if length else None
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.zero3 = any(hasattr(p, "ds_id") for p in self.params)
        with self._gathered():
            self.shadow = [p.detach().float().clone() for p in self.params]

    def _gathered(self):
        """ZeRO-3 keeps only a shard of each parameter: gather the whole one for the update."""
        return deepspeed.zero.GatheredParameters(self.params, enabled=self.zero3)

    def beta(self, step: int) -> float:
        """The decay of update ``step`` (1-based); the power average's first update takes the weights whole."""
        return self.decay if self.gamma is None else (1 - 1 / step) ** (self.gamma + 1)

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Average in the weights after optimizer step ``step`` (1-based)."""
        weight = 1 - self.beta(step)
        with self._gathered():
            for s, p in zip(self.shadow, self.params):
                s.lerp_(p.detach().float(), weight)

    def state_dict(self) -> dict[str, torch.Tensor]:
        names = {id(p): n for n, p in self.module.named_parameters()}
        return {names[id(p)]: s for p, s in zip(self.params, self.shadow)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        own = self.state_dict()
        if own.keys() != state.keys():
            raise ValueError("EMA state does not match the model's parameters")
        for name, s in own.items():
            s.copy_(state[name])
