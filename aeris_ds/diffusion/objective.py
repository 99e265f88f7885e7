"""The training objective as (network, inputs, labels, step) → the micro-batch's loss, for the train loop.

diffusion: the weighted MSE of the velocity; consistency: the same MSE against the sCM target
(diffusion/consistency.py), which needs a second forward; crps_finetune: the fair CRPS of K-step rollouts
of M members of the one-step consistency model (diffusion/crps.py), K·M forwards with gradients.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor

from aeris_ds.config import ExperimentConfig
from aeris_ds.diffusion.consistency import (
    ConsistencySampler,
    ConsistencySettings,
    Network,
    consistency_labels,
    consistency_sample,
)
from aeris_ds.diffusion.crps import rollout_crps

Batch = tuple[Tensor, ...]
Objective = Callable[[Network, Batch, Batch, int], Tensor]


def weighted_mse(pred: Tensor, labels: tuple[Tensor, Tensor]) -> Tensor:
    """Σ w·(F − v)²; the weights already carry every normalisation (see TrainingExamples)."""
    target, weight = labels
    return (weight * (pred.float() - target) ** 2).sum()


def diffusion(net: Network, inputs: Batch, labels: Batch, step: int) -> Tensor:
    return weighted_mse(net(*inputs), labels)


def crps_rollout_loss(net: Network, inputs: Batch, labels: Batch, members: int,
                      tendency_scale: Tensor) -> Tensor:
    """Σ_k weighted fair CRPS of ``members`` one-step consistency rollouts, in units of the tendency's std.

    inputs: state [B, T, C], forcings [B, K, T, F], noise [B, K, M, T, C]; labels: truths [B, K, T, C], weight
    [B, T, C]. ``tendency_scale`` [C]: the tendency's std over the state's (a step adds tendency × scale).
    """
    state, forcings, noise = inputs
    truths, weight = labels
    scale = tendency_scale.to(state)
    sampler = ConsistencySampler(steps=1)  # the forecast's one-step sampler

    def advance(x: Tensor, z: Tensor, k: int) -> Tensor:  # x, z: [M·B, T, C], member-major
        forcing = forcings[:, k - 1].repeat(members, 1, 1)
        tendency = consistency_sample(lambda x_t, t: net(torch.cat([x_t, x, forcing], dim=-1), t), z, sampler)
        return x + tendency * scale

    return rollout_crps(advance, state, truths.transpose(0, 1), noise.permute(1, 2, 0, 3, 4), weight / scale)


def training_objective(cfg: ExperimentConfig, token_group: dist.ProcessGroup | None,
                       tendency_scale: Tensor | None = None) -> Objective:
    """The configured objective; ``token_group`` holds the ranks that share a sample's tokens (WP × SP);
    ``tendency_scale`` [C] (crps_finetune): the tendency's std over the state's."""
    d = cfg.diffusion
    if d.objective == "diffusion":
        return diffusion
    if d.objective == "crps_finetune":
        def crps(net: Network, inputs: Batch, labels: Batch, step: int) -> Tensor:
            return crps_rollout_loss(net, inputs, labels, d.crps_members, tendency_scale)

        return crps
    settings = ConsistencySettings(sigma_d=d.sigma_d, dt=d.consistency_dt, norm_c=d.consistency_norm_c,
                                   warmup_steps=d.consistency_warmup)

    def consistency(net: Network, inputs: Batch, labels: Batch, step: int) -> Tensor:
        return weighted_mse(*consistency_labels(net, *inputs, labels, step, settings, token_group))

    return consistency
