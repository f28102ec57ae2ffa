"""Regularisers on the clue machinery (reference 4.5, fixes 5 and 6).

With sigma_k = sigmoid(stop_k) and clues_used_b = sum_k (1 - sigma_k):
  min_clue_loss        = min_clue_weight * mean_b relu(min_clues - clues_used_b)
  ponder_loss          = ponder_weight * mean_b clues_used_b
  entropy_ponder_loss  = entropy_ponder_weight * mean_b sum_k H(A_bk) / ln(n_b) * (1 - sigma_bk)
  sparsity_loss        = the sum of the three above (the "base terms")
  clue_variance_loss   = variance_weight * relu(target_variance - std_b(clues_used))       (fix 5)
  stop_saturation_loss = saturation_weight * mean_bk relu(|stop_bk| - saturation_threshold)   (fix 6)
  total                = lambda_sparsity * sparsity_loss + clue_variance_loss + stop_saturation_loss

The fix 5 and 6 terms are in `total`, hence in the gradient (the original computed and dropped them), and
are NOT scaled by lambda_sparsity: the configured weight is the effective weight.
std is the unbiased batch std (B - 1 in the divisor); with B = 1 the term is 0. When every clues_used is
identical the std is 0 and its gradient, undefined there, is taken as 0 (no NaN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def attention_entropy(attention_maps: torch.Tensor) -> torch.Tensor:
    """(B, K) entropy in nats of each clue's attention map (B, K, H, W); cells with a = 0 add 0."""
    a = attention_maps.flatten(2)
    return -(a * a.clamp(min=1e-12).log()).sum(dim=-1)


def batch_std(values: torch.Tensor) -> torch.Tensor:
    """Unbiased std over dim 0 of a (B,) tensor, B >= 2, with a zero gradient where the std is 0."""
    var = values.var(dim=0, unbiased=True)
    return torch.where(var > 0, var.clamp(min=1e-20).sqrt(), torch.zeros_like(var))


class SparsityRegularization(nn.Module):
    def __init__(
        self,
        min_clues: float = 1.0,
        min_clue_weight: float = 5.0,
        ponder_weight: float = 0.02,
        entropy_ponder_weight: float = 0.02,
        variance_weight: float = 0.0,
        target_variance: float = 0.5,
        saturation_weight: float = 0.0,
        saturation_threshold: float = 5.0,
        lambda_sparsity: float = 1.0,
    ):
        super().__init__()
        self.min_clues = min_clues
        self.min_clue_weight = min_clue_weight
        self.ponder_weight = ponder_weight
        self.entropy_ponder_weight = entropy_ponder_weight
        self.variance_weight = variance_weight
        self.target_variance = target_variance  # the seed's name; it is a target *std*
        self.saturation_weight = saturation_weight
        self.saturation_threshold = saturation_threshold
        self.lambda_sparsity = lambda_sparsity

    def forward(
        self,
        stop_logits: torch.Tensor,
        attention_maps: torch.Tensor,
        valid_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """stop_logits (B, K), attention_maps (B, K, H, W), valid_mask (B, H, W): the cells attention may
        cover (n_b = their count, default the whole canvas). Returns the components and 'total'."""
        go = 1.0 - torch.sigmoid(stop_logits)  # (B, K) probability of using each clue
        clues_used = go.sum(dim=1)

        min_clue = self.min_clue_weight * F.relu(self.min_clues - clues_used).mean()
        ponder = self.ponder_weight * clues_used.mean()
        if valid_mask is None:
            cells = torch.full_like(clues_used, float(attention_maps[0, 0].numel()))
        else:
            cells = valid_mask.flatten(1).sum(dim=1).to(clues_used.dtype)
            # an all-PAD canvas lets the controller attend anywhere (rlan.model.saliency does the same)
            cells = torch.where(cells > 0, cells, torch.full_like(cells, float(valid_mask[0].numel())))
        max_entropy = cells.clamp(min=2.0).log()  # ln 2 floor: a one-cell grid has entropy 0 anyway
        normalised = attention_entropy(attention_maps) / max_entropy[:, None]
        entropy_ponder = self.entropy_ponder_weight * (normalised * go).sum(dim=1).mean()
        base = min_clue + ponder + entropy_ponder

        if clues_used.shape[0] < 2:  # no spread to measure in a batch of one
            variance = clues_used.sum() * 0.0
        else:
            variance = self.variance_weight * F.relu(self.target_variance - batch_std(clues_used))
        excess = F.relu(stop_logits.abs() - self.saturation_threshold)
        saturation = self.saturation_weight * excess.mean()

        return {
            "min_clue_loss": min_clue,
            "ponder_loss": ponder,
            "entropy_ponder_loss": entropy_ponder,
            "sparsity_loss": base,
            "clue_variance_loss": variance,
            "stop_saturation_loss": saturation,
            "total": self.lambda_sparsity * base + variance + saturation,
        }
