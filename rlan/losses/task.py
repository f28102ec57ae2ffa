"""Class-weighted stablemax cross-entropy on the query output (reference 4.2-4.4, fix 1).

Both losses take logits (B, 11, H, W), targets (B, H, W) with classes 0..10 and a bool mask (B, H, W) of
the cells that count, and return one loss per sample: the mean over that sample's counted cells of
weight[target] * (focal factor) * (-log_stablemax[target]). The caller averages over the batch.

Per-sample means over *valid* cells, not over the canvas: the original divided each sample's sum by the
whole padded canvas, so a 3x3 task in a 30x30 batch weighed 1/100 of a full-size one. A sample with no
counted cell gets 0.

Class weights (computed per batch, without gradient, from the targets in counted cells):
  background (0) = bg_weight_cap, OUTSIDE (10) = outside_weight (both fixed),
  foreground 1..9: inverse frequency min-max rescaled over the foreground classes PRESENT in the batch to
  [1, fg_weight_cap] (rarest present colour -> fg_weight_cap, most common -> 1); when every present
  colour has the same count (or only one is present) each gets (1 + fg_weight_cap) / 2. An absent colour
  takes no part in the min/max (the original gave it a raw weight of 1e6, which squashed every present
  colour to ~1, reference 4.2) and its weight, never read, is 1.
"""

from __future__ import annotations

import torch
from torch import nn

from rlan.constants import NUM_CLASSES, NUM_COLORS, OUTSIDE
from rlan.losses.stablemax import log_stablemax


def class_weights(
    targets: torch.Tensor,
    bg_weight_cap: float,
    fg_weight_cap: float,
    outside_weight: float,
    num_classes: int = NUM_CLASSES,
) -> torch.Tensor:
    """(num_classes,) float32 weights from the flat targets of the counted cells (see the module doc)."""
    counts = torch.bincount(targets.reshape(-1), minlength=num_classes)[:num_classes].float()
    fg = counts[1:NUM_COLORS]
    present = fg > 0
    raw = counts.sum() / fg.clamp(min=1.0)  # inverse frequency; only the present entries are used
    lo = raw.masked_fill(~present, float("inf")).amin()
    hi = raw.masked_fill(~present, 0.0).amax()
    all_equal = (hi - lo) <= 1e-6 * hi  # also true when no colour is present (hi 0, lo inf)
    spread = ((raw - lo) / (hi - lo).clamp(min=1e-12)).clamp(0.0, 1.0)
    fg_weights = torch.where(
        all_equal,
        torch.full_like(raw, (1.0 + fg_weight_cap) / 2.0),
        1.0 + (fg_weight_cap - 1.0) * spread,
    )
    weights = torch.ones(num_classes, device=targets.device)
    weights[1:NUM_COLORS] = torch.where(present, fg_weights, torch.ones_like(fg_weights))
    weights[0] = bg_weight_cap
    if OUTSIDE < num_classes:
        weights[OUTSIDE] = outside_weight
    return weights


class WeightedStablemaxLoss(nn.Module):
    """Per-sample weighted stablemax cross-entropy (loss_mode 'weighted_stablemax').

    logit_clamp_max (fix 1): the counted cells' logits are hard-clamped to +-logit_clamp_max before the
    stablemax, so the gradient is 0 beyond the clamp; <= 0 disables it.
    """

    def __init__(
        self,
        bg_weight_cap: float = 1.0,
        fg_weight_cap: float = 6.0,
        outside_weight: float = 1.0,
        logit_clamp_max: float = 50.0,
    ):
        super().__init__()
        self.bg_weight_cap = bg_weight_cap
        self.fg_weight_cap = fg_weight_cap
        self.outside_weight = outside_weight
        self.logit_clamp_max = logit_clamp_max

    def _focal_factor(self, log_p_target: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(log_p_target)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch = logits.shape[0]
        mask = mask.bool()
        cell_logits = logits.permute(0, 2, 3, 1)[mask]  # (M, C), counted cells only
        cell_targets = targets[mask].long()
        cell_sample = torch.arange(batch, device=logits.device).view(-1, 1, 1).expand_as(mask)[mask]
        if self.logit_clamp_max > 0:
            cell_logits = cell_logits.clamp(-self.logit_clamp_max, self.logit_clamp_max)

        weights = class_weights(cell_targets, self.bg_weight_cap, self.fg_weight_cap, self.outside_weight)
        log_p = log_stablemax(cell_logits, dim=-1, dtype=torch.float64)
        log_p_target = log_p.gather(1, cell_targets[:, None]).squeeze(1)
        cell_loss = -log_p_target * self._focal_factor(log_p_target) * weights.double()[cell_targets]

        sums = torch.zeros(batch, dtype=torch.float64, device=logits.device).index_add(
            0, cell_sample, cell_loss
        )
        cells = mask.flatten(1).sum(dim=1).clamp(min=1)
        return (sums / cells).float()


class FocalWeightedStablemaxLoss(WeightedStablemaxLoss):
    """The weighted loss times the focal factor (1 - p_target)^gamma, not detached (loss_mode
    'focal_weighted', reference 4.3). p is the stablemax probability."""

    def __init__(
        self,
        bg_weight_cap: float = 1.0,
        fg_weight_cap: float = 6.0,
        outside_weight: float = 1.0,
        logit_clamp_max: float = 50.0,
        gamma: float = 1.2,
    ):
        super().__init__(bg_weight_cap, fg_weight_cap, outside_weight, logit_clamp_max)
        self.gamma = gamma

    def _focal_factor(self, log_p_target: torch.Tensor) -> torch.Tensor:
        # The floor keeps d/dp (1-p)^gamma finite for gamma < 1 when p rounds to 1.
        return (1.0 - log_p_target.exp()).clamp(min=1e-12) ** self.gamma
