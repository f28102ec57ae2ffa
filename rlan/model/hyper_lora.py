"""HyperLoRA (ref 3.8): per-task low-rank deltas for the solver, predicted from the support maps.

Fix 4. The original pooled each pair's map by global average, which no spatial permutation changes, so its
"D4-averaged" pool_context equalled pool_context_simple and the context-level equivariance loss was ~0.
Here each pair is pooled by attention with a learned query whose keys carry a learned, unsymmetric
position embedding: the single pass (pool_context_simple) sees orientation, and only the explicit average
over the 8 D4 transforms (pool_context) is invariant.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from rlan.config import ModelConfig
from rlan.model.context import masked_pair_mean
from rlan.model.output import LoraDeltas

TARGETS = ("gru_reset", "gru_update", "gru_candidate", "output_head")


def d4_transforms(maps: torch.Tensor) -> list[torch.Tensor]:
    """The 8 rotations and reflections of the last two (square) dims, identity first."""
    rotations = [torch.rot90(maps, k, dims=(-2, -1)) for k in range(4)]
    return rotations + [r.transpose(-2, -1) for r in rotations]


def factor_mlp(hidden_dim: int, out_dim: int, init_scale: float) -> nn.Sequential:
    mlp = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))
    nn.init.normal_(mlp[-1].weight, std=init_scale)  # small deltas at init: the solver starts un-modulated
    nn.init.zeros_(mlp[-1].bias)
    return mlp


class HyperLoRA(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        d, r, s = config.hidden_dim, config.hyperlora_rank, config.context_downsample
        self.rank = r
        self.pool_query = nn.Parameter(torch.randn(d) / math.sqrt(d))
        self.pool_position = nn.Parameter(torch.randn(s * s, d) * 0.1)
        self.context_fuse = nn.Sequential(
            nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d), nn.LayerNorm(d)
        )
        init = config.hyperlora_init_scale
        self.factor_a = nn.ModuleDict({t: factor_mlp(d, d * r, init) for t in TARGETS})
        self.factor_b = nn.ModuleDict({t: factor_mlp(d, r * d, init) for t in TARGETS})
        self.scaling = config.hyperlora_scaling
        self.max_norm = config.hyperlora_max_norm
        self.reg_weight = config.hyperlora_delta_reg_weight
        self.d4_pooling = config.hyperlora_pooling == "d4"

    def pool_context_simple(self, support_maps: torch.Tensor, support_mask: torch.Tensor) -> torch.Tensor:
        """(B, N, D, s, s) -> (B, D): attention-pool each pair, mean over valid pairs, context_fuse."""
        tokens = support_maps.flatten(3).transpose(2, 3)  # (B, N, s*s, D)
        scores = (tokens + self.pool_position) @ self.pool_query
        pooled = (torch.softmax(scores, dim=-1)[..., None] * tokens).sum(2)  # (B, N, D)
        return self.context_fuse(masked_pair_mean(pooled, support_mask))

    def pool_context(self, support_maps: torch.Tensor, support_mask: torch.Tensor) -> torch.Tensor:
        """Mean of pool_context_simple over the 8 D4 transforms of the maps: exactly D4-invariant."""
        views = torch.cat(d4_transforms(support_maps), dim=0)  # all 8 in one batched pass
        contexts = self.pool_context_simple(views, support_mask.repeat(8, 1))
        return contexts.view(8, support_maps.shape[0], -1).mean(0)

    def compute_deltas(self, context: torch.Tensor, delta_scale: float) -> LoraDeltas:
        """Per target: dW = delta_scale * scaling * A(c) B(c); regularised raw, then norm-clamped."""
        b, d = context.shape
        deltas, factors, raw_norms, clamped_norms = {}, {}, [], []
        for target in TARGETS:
            a = self.factor_a[target](context).view(b, d, self.rank)
            bb = self.factor_b[target](context).view(b, self.rank, d)
            raw = (delta_scale * self.scaling) * (a @ bb)
            norm = torch.linalg.matrix_norm(raw)  # Frobenius, (B,)
            factor = (self.max_norm / norm.clamp_min(1e-12)).clamp(max=1.0)
            deltas[target] = raw * factor[:, None, None]
            factors[target] = (a * (delta_scale * self.scaling * factor)[:, None, None], bb)
            raw_norms.append(norm.mean())
            clamped_norms.append(norm * factor)
        return LoraDeltas(
            **deltas,
            context=context,
            reg_loss=self.reg_weight * torch.stack(raw_norms).sum(),
            norm=torch.stack(clamped_norms).mean(),
            factors=factors,
        )

    def forward(
        self, support_maps: torch.Tensor, support_mask: torch.Tensor, delta_scale: float
    ) -> LoraDeltas:
        pool = self.pool_context if self.d4_pooling else self.pool_context_simple
        return self.compute_deltas(pool(support_maps, support_mask), delta_scale)
