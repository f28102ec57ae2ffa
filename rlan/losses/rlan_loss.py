"""RLANLoss: the per-batch training loss of one model forward (reference 4.4-4.6, fixes 1, 5, 6).

  total = task_loss
        + lambda_entropy * entropy_loss
        + lambda_sparsity * sparsity_loss          (min-clue hinge + ponder + entropy ponder)
        + clue_variance_loss + stop_saturation_loss  (fixes 5, 6: weighted by their own config weights)
        + lora_reg_loss                            (HyperLoRA's delta regulariser, 0 without LoRA)

Every term is also returned under its own key, unscaled by the lambdas. task_loss is the batch mean of the
per-sample stablemax loss and, unlike the original's reported value, does not contain the min-clue hinge
(which is min_clue_loss here; the total is the same). entropy_loss is the mean attention entropy in nats,
capped at 10 as in the original. Left out: centroid diversity, predicate diversity, curriculum, deep
supervision and ACT (all 0 or off in stable_dev, or of doubtful units, reference 4.6).
"""

from __future__ import annotations

import torch

from rlan.config import TrainingConfig
from rlan.constants import PAD
from rlan.losses.sparsity import SparsityRegularization, attention_entropy
from rlan.losses.task import FocalWeightedStablemaxLoss, WeightedStablemaxLoss
from rlan.model.output import RLANOutput

ENTROPY_LOSS_CAP = 10.0


def build_task_loss(config: TrainingConfig) -> WeightedStablemaxLoss:
    weights = dict(
        bg_weight_cap=config.bg_weight_cap,
        fg_weight_cap=config.fg_weight_cap,
        outside_weight=config.outside_weight,
        logit_clamp_max=config.logit_clamp_max,
    )
    if config.loss_mode == "focal_weighted":
        return FocalWeightedStablemaxLoss(**weights, gamma=config.focal_gamma)
    return WeightedStablemaxLoss(**weights)


class RLANLoss:
    def __init__(self, training_config: TrainingConfig):
        config = training_config
        self.config = config
        self.task_loss = build_task_loss(config)
        self.sparsity = SparsityRegularization(
            min_clues=config.min_clues,
            min_clue_weight=config.min_clue_weight,
            ponder_weight=config.ponder_weight,
            entropy_ponder_weight=config.entropy_ponder_weight,
            variance_weight=config.clue_variance_weight,
            target_variance=config.clue_target_variance,
            saturation_weight=config.stop_saturation_weight,
            saturation_threshold=config.stop_saturation_threshold,
            lambda_sparsity=config.lambda_sparsity,
        )

    def __call__(self, output: RLANOutput, batch: dict) -> dict[str, torch.Tensor]:
        per_sample = self.task_loss(output.logits, batch["query_targets"], batch["target_mask"])
        task_loss = per_sample.mean()
        entropy_loss = attention_entropy(output.attention_maps).mean().clamp(max=ENTROPY_LOSS_CAP)
        sparsity = self.sparsity(output.stop_logits, output.attention_maps, batch["query_inputs"] != PAD)
        lora_reg = output.lora.reg_loss if output.lora is not None else task_loss.new_zeros(())

        total = (
            task_loss
            + self.config.lambda_entropy * entropy_loss
            + sparsity["total"]  # = lambda_sparsity * sparsity_loss + clue_variance + stop_saturation
            + lora_reg
        )
        components = {k: v for k, v in sparsity.items() if k != "total"}
        # Clue counts and stop-logit ranges are epoch statistics (clues/*, stop/*, rlan/epoch_stats.py), not
        # loss terms: they are not returned here a second time under other names.
        return {
            "total": total,
            "task_loss": task_loss,
            "entropy_loss": entropy_loss,
            **components,
            "lora_reg_loss": lora_reg,
        }
