"""The meta losses of one batch, weighted and capped together (fix 2): LOO, context-level and output-level
equivariance, each active from the epoch its schedule says (rlan.schedule.meta_at)."""

from __future__ import annotations

import torch

from rlan.config import RunConfig
from rlan.losses.meta import AugmentationEquivarianceLoss, OutputEquivarianceLoss, loo_loss
from rlan.losses.meta_cap import MetaCap
from rlan.model.output import ModelStages, RLANOutput
from rlan.schedule import meta_at


class MetaLosses:
    """LOO, context-level and output-level equivariance, weighted and capped together (fix 2)."""

    NAMES = ("loo", "equiv", "output_equiv")

    def __init__(self, config: RunConfig):
        t = config.training
        self.config = config
        self.cap = MetaCap.from_config(t.meta_escalation)
        self.equiv = AugmentationEquivarianceLoss(
            t.equivariance_training.num_augmentations, pooling=t.equivariance_training.pooling
        )
        self.output_equiv = OutputEquivarianceLoss(
            t.output_equivariance_training.num_augmentations, t.output_equivariance_training.color_permutation
        )

    def compute(
        self, model, batch: dict, output: RLANOutput, stages: ModelStages, epoch: int, index: int
    ) -> dict[str, tuple[float, torch.Tensor]]:
        """{name: (weight, loss)} for the meta losses active this epoch."""
        t = self.config.training
        active = meta_at(self.config, epoch, stages)
        terms: dict[str, tuple[float, torch.Tensor]] = {}
        if active.loo:
            loss, _ = loo_loss(model, batch, stages, t.loo_training.max_loo_pairs)
            terms["loo"] = (t.loo_training.loss_weight, loss)
        # The augmentations drawn for a batch depend on (seed, epoch, batch) only, so a resumed run
        # draws the same ones.
        generator = torch.Generator().manual_seed((t.seed * 1_000_003 + epoch * 10_007 + index) % 2**31)
        if active.equivariance:
            loss, _ = self.equiv(model, batch, stages, generator=generator)
            terms["equiv"] = (t.equivariance_training.loss_weight, loss)
        if active.output_equivariance:
            loss, _ = self.output_equiv(
                model, batch, stages, original_logits=output.logits, generator=generator
            )
            terms["output_equiv"] = (t.output_equivariance_training.loss_weight, loss)
        return terms

    def cap_inputs(self, losses: dict[str, torch.Tensor], terms: dict) -> tuple[float, list[float]]:
        """The task-loss value and the meta weights the cap compares (training.meta_escalation
        .meta_loss_cap_inputs): the seed's, or those of the losses active this batch."""
        t = self.config.training
        task = float(losses["task_loss"].detach())
        if t.meta_escalation.meta_loss_cap_inputs == "active":
            return task, [w for w, _ in terms.values()]
        # The seed's train_epoch: its task loss holds the min-clue hinge (reference 4.4), and W counts the
        # LOO and context-equivariance losses that exist, whether or not they have started.
        task += t.lambda_sparsity * float(losses["min_clue_loss"].detach())
        blocks = (t.loo_training, t.equivariance_training)
        return task, [b.loss_weight for b in blocks if b.enabled]

    def combine(
        self, losses: dict[str, torch.Tensor], terms: dict[str, tuple[float, torch.Tensor]]
    ) -> tuple[float, torch.Tensor]:
        """The cap factor of this batch and factor * sum(weight * loss) over the active meta losses."""
        meta = sum(w * loss for w, loss in terms.values()) if terms else torch.zeros(())
        if not self.cap.enabled:
            return 1.0, meta
        task, weights = self.cap_inputs(losses, terms)
        if self.cap.mode == "value":  # compares values, so only the losses computed this batch count
            weights = [w for w, _ in terms.values()]
        values = [float(loss.detach()) for _, loss in terms.values()]
        factor = self.cap.factor(task, weights, values if self.cap.mode == "value" else ())
        return factor, factor * meta
