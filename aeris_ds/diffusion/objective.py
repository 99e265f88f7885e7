"""The training objective as (network, batch) → (prediction, labels) for the train loop's weighted MSE.

diffusion: the batch's velocity target as it is; consistency: the sCM target (diffusion/consistency.py),
which needs a second forward per micro-batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.distributed as dist
from torch import Tensor

from aeris_ds.config import ExperimentConfig
from aeris_ds.diffusion.consistency import ConsistencySettings, Network, consistency_labels

Labels = tuple[Tensor, Tensor]
Objective = Callable[[Network, Tensor, Tensor, Labels, int], tuple[Tensor, Labels]]


def diffusion(net: Network, x: Tensor, t: Tensor, labels: Labels, step: int) -> tuple[Tensor, Labels]:
    return net(x, t), labels


def training_objective(cfg: ExperimentConfig, token_group: dist.ProcessGroup | None) -> Objective:
    """The configured objective; ``token_group`` holds the ranks that share a sample's tokens (WP × SP)."""
    d = cfg.diffusion
    if d.objective == "diffusion":
        return diffusion
    settings = ConsistencySettings(sigma_d=d.sigma_d, dt=d.consistency_dt, norm_c=d.consistency_norm_c,
                                   warmup_steps=d.consistency_warmup)

    def consistency(net: Network, x: Tensor, t: Tensor, labels: Labels, step: int) -> tuple[Tensor, Labels]:
        return consistency_labels(net, x, t, labels, step, settings, token_group)

    return consistency
