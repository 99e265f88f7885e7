"""The training objective as (network, inputs, labels, step) → the micro-batch's loss, for the train loop.

diffusion: the weighted MSE of the velocity; consistency: the same MSE against the sCM target
(diffusion/consistency.py), which needs a second forward; crps_finetune: the fair CRPS of K-step rollouts
of M members of the one-step consistency model (diffusion/crps.py), K·M forwards with gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

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
TokenLoss = Callable[[Tensor, tuple[Tensor, Tensor]], Tensor]


def weighted_mse(pred: Tensor, labels: tuple[Tensor, Tensor]) -> Tensor:
    """Σ w·(F − v)²; the weights already carry every normalisation (see TrainingExamples)."""
    target, weight = labels
    return (weight * (pred.float() - target) ** 2).sum()


def scale_weighted_mse(pred: Tensor, labels: tuple[Tensor, Tensor], block: tuple[int, int],
                       scale_weights: Sequence[float]) -> Tensor:
    """weighted_mse with the error's energy split by spatial scale, each scale weighted (Haar levels).

    The error e = √w·(F − v) of tokens [B, T, C] in window-major order is viewed as blocks [B, n, h, w, C]
    (a rank's rows of each of its windows). Level l's detail energy is what 2×2 averaging removes from the
    level-(l−1) approximation: D_l = E_{l−1} − E_l with E_l = 4^l·Σ a_l², a_l the 2^l × 2^l block means. By
    Parseval the loss Σ_l λ_l·D_l + E_L is exactly weighted_mse when every λ_l = 1; λ_1 weights the
    2-pixel scale (the top of the spectrum), λ_2 the 4-pixel one, …
    """
    target, weight = labels
    err = weight.sqrt() * (pred.float() - target)
    err = err.reshape(err.shape[0], -1, *block, err.shape[-1])
    energy = err.square().sum()
    loss = err.new_zeros(())
    for level, lam in enumerate(scale_weights, start=1):
        err = err.unflatten(2, (-1, 2)).unflatten(4, (-1, 2)).mean((3, 5))  # 2×2 means: [B, n, h/2, w/2, C]
        coarse = 4**level * err.square().sum()
        loss = loss + lam * (energy - coarse)
        energy = coarse
    return loss + energy


def diffusion_objective(loss: TokenLoss = weighted_mse) -> Objective:
    """The denoising objective: ``loss`` of the velocity the network predicts from its inputs."""
    def diffusion(net: Network, inputs: Batch, labels: Batch, step: int) -> Tensor:
        return loss(net(*inputs), labels)

    return diffusion


diffusion = diffusion_objective()


def token_loss(cfg: ExperimentConfig) -> TokenLoss:
    """The loss of the network's output tokens: weighted_mse, split by scale when diffusion.scale_weights is set."""
    weights = cfg.diffusion.scale_weights
    if not weights:
        return weighted_mse
    block = (cfg.model.window[0] // cfg.layout.sp, cfg.model.window[1])  # a rank's rows of each window
    return partial(scale_weighted_mse, block=block, scale_weights=tuple(weights))


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
    loss = token_loss(cfg)
    if d.objective == "diffusion":
        return diffusion_objective(loss)
    if d.objective == "crps_finetune":
        def crps(net: Network, inputs: Batch, labels: Batch, step: int) -> Tensor:
            return crps_rollout_loss(net, inputs, labels, d.crps_members, tendency_scale)

        return crps
    settings = ConsistencySettings(sigma_d=d.sigma_d, dt=d.consistency_dt, norm_c=d.consistency_norm_c,
                                   warmup_steps=d.consistency_warmup)

    def consistency(net: Network, inputs: Batch, labels: Batch, step: int) -> Tensor:
        return loss(*consistency_labels(net, *inputs, labels, step, settings, token_group))

    return consistency
