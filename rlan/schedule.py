"""What changes with the epoch: staged modules, LoRA delta scale, DSC temperature, meta losses, LR."""

from __future__ import annotations

import math
from dataclasses import dataclass

from rlan.config import RunConfig
from rlan.model.output import ModelStages


def temperature_at(config: RunConfig, epoch: int) -> float:
    """Exponential anneal from temperature_start to temperature_end over temperature_epochs."""
    t = config.training
    progress = min(epoch / t.temperature_epochs, 1.0)
    return t.temperature_start * (t.temperature_end / t.temperature_start) ** progress


def delta_scale_at(config: RunConfig, epoch: int) -> float:
    """LoRA delta scale: linear warm-up from its start value over hyperlora_warmup_epochs."""
    t = config.training
    if t.hyperlora_warmup_epochs == 0:
        return t.hyperlora_delta_scale
    progress = min((epoch - t.hyperlora_start_epoch) / t.hyperlora_warmup_epochs, 1.0)
    return t.hyperlora_delta_scale_start + max(progress, 0.0) * (
        t.hyperlora_delta_scale - t.hyperlora_delta_scale_start
    )


def stages_at(config: RunConfig, epoch: int) -> ModelStages:
    t, m = config.training, config.model
    return ModelStages(
        solver_context=m.use_solver_context and epoch >= t.solver_context_start_epoch,
        cross_attention=m.use_cross_attention_context and epoch >= t.cross_attention_start_epoch,
        hyperlora=m.use_hyperlora and epoch >= t.hyperlora_start_epoch,
        delta_scale=delta_scale_at(config, epoch),
        temperature=temperature_at(config, epoch),
    )


@dataclass(frozen=True)
class MetaSchedule:
    loo: bool
    equivariance: bool
    output_equivariance: bool


def meta_at(config: RunConfig, epoch: int, stages: ModelStages) -> MetaSchedule:
    """Meta losses active this epoch; LOO and context equivariance act through HyperLoRA, so need it."""
    t = config.training

    def on(block) -> bool:
        return block.enabled and epoch >= block.start_epoch and block.loss_weight > 0

    return MetaSchedule(
        loo=on(t.loo_training) and stages.hyperlora,
        equivariance=on(t.equivariance_training) and stages.hyperlora,
        output_equivariance=on(t.output_equivariance_training),
    )


def lr_factor(config: RunConfig, step: int, steps_per_epoch: int) -> float:
    """Multiplier of the base LR at an optimiser step: linear warm-up, then constant or cosine."""
    t = config.training
    warmup = t.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    if t.lr_schedule == "constant":
        return 1.0
    total = max(t.max_epochs * steps_per_epoch - warmup, 1)
    progress = min((step - warmup) / total, 1.0)
    return t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
