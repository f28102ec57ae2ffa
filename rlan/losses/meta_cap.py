"""The meta-loss cap (fix 2, reference 5.5): one factor f in [0, 1] that multiplies every meta-loss weight
(LOO, context equivariance, output equivariance) for one batch. Pure functions of floats.

Mode 'weights' is the seed's formula: it compares the *configured weights* with r/(1-r) times the task
loss *value*, so it bites only when the task loss is small, and does not bound the meta share of the
total. Mode 'value' compares the weighted meta loss values instead and does bound it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

FACTOR_FLOOR = 0.01


def _check_ratio(ratio: float) -> None:
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"meta_loss_cap_ratio must lie in (0, 1), got {ratio}")


def meta_loss_cap_factor(task_loss: float, meta_weights: Sequence[float], ratio: float) -> float:
    """The seed's cap: max_meta = r/(1-r) * task_loss, W = sum(meta_weights);
    f = clip(max_meta / W, 0.01, 1) if W > 0 and W > max_meta, else 1.

    Edge cases: W = 0 (no meta loss configured) -> 1.0. task_loss <= 0 with W > 0 -> the floor 0.01
    (the formula's own limit: max_meta <= 0 < W), as does a NaN task loss (a broken batch gets the least
    meta weight). An infinite task loss -> 1.0.
    """
    _check_ratio(ratio)
    total_weight = float(sum(meta_weights))
    if total_weight <= 0.0:
        return 1.0
    if math.isnan(task_loss):
        return FACTOR_FLOOR
    max_meta = ratio / (1.0 - ratio) * task_loss
    if total_weight > max_meta:
        return min(1.0, max(FACTOR_FLOOR, max_meta / total_weight))
    return 1.0


def meta_loss_cap_factor_by_value(
    task_loss: float, weighted_meta_values: Sequence[float], ratio: float
) -> float:
    """Mode 'value': the largest f <= 1 with f*M <= r*(task_loss + f*M), M = sum_i w_i * L_i, i.e.
    f = min(1, r/(1-r) * task_loss / M). No floor (a floor would break the guarantee when the task loss
    is tiny). Edge cases: M <= 0 -> 1.0 (nothing to cap); task_loss <= 0 or NaN with M > 0 -> 0.0.
    """
    _check_ratio(ratio)
    meta = float(sum(weighted_meta_values))
    if meta <= 0.0:
        return 1.0
    if math.isnan(task_loss) or task_loss <= 0.0:
        return 0.0
    return min(1.0, ratio / (1.0 - ratio) * task_loss / meta)


@dataclass(frozen=True)
class MetaCap:
    """The cap as configured by `training.meta_escalation`; disabled -> factor 1."""

    enabled: bool = False
    ratio: float = 0.25
    mode: str = "weights"

    @classmethod
    def from_config(cls, meta_escalation) -> MetaCap:
        return cls(
            enabled=meta_escalation.meta_loss_cap_enabled,
            ratio=meta_escalation.meta_loss_cap_ratio,
            mode=meta_escalation.meta_loss_cap_mode,
        )

    def factor(
        self, task_loss: float, meta_weights: Sequence[float], meta_losses: Sequence[float] = ()
    ) -> float:
        """meta_losses (same order as meta_weights) are needed in 'value' mode only."""
        if not self.enabled:
            return 1.0
        if self.mode == "weights":
            return meta_loss_cap_factor(task_loss, meta_weights, self.ratio)
        if self.mode == "value":
            if len(meta_losses) != len(meta_weights):
                raise ValueError("value mode needs one meta loss value per meta weight")
            weighted = [w * loss for w, loss in zip(meta_weights, meta_losses, strict=True)]
            return meta_loss_cap_factor_by_value(task_loss, weighted, self.ratio)
        raise ValueError(f"unknown meta_loss_cap_mode '{self.mode}'")
