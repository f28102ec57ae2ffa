"""Support pairs -> spatial support maps S (ref 3.3), and the two ways S is injected into query features."""

from __future__ import annotations

import torch
import torch.nn as nn

from rlan.constants import MAX_GRID_SIDE, NUM_INPUT_TOKENS, PAD
from rlan.model.attention import attend, project_keys
from rlan.model.canvas import canvas_groups, fit_canvas
from rlan.model.dropout import Dropout
from rlan.model.fused import group_norm_gelu, recompute_if_large


class ConvBlock(nn.Sequential):
    """Conv -> GroupNorm(8) -> GELU; the norm and GELU run as one step that keeps only the conv output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return group_norm_gelu(self[0](x), self[1])


def conv_block(in_dim: int, out_dim: int, kernel: int) -> ConvBlock:
    return ConvBlock(
        nn.Conv2d(in_dim, out_dim, kernel, padding=kernel // 2), nn.GroupNorm(8, out_dim), nn.GELU()
    )


def masked_pair_mean(values: torch.Tensor, support_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the valid pairs of (B, N, ...) values: padded slots change nothing, not even the scale."""
    weight = support_mask.to(values.dtype).view(*support_mask.shape, *([1] * (values.dim() - 2)))
    return (values * weight).sum(1) / support_mask.sum(1).clamp_min(1).view(-1, *([1] * (values.dim() - 2)))


def support_context(support_maps: torch.Tensor, support_mask: torch.Tensor) -> torch.Tensor:
    """c (B, D): mean of S over the valid pairs and all s x s positions (FiLM and the stop head use it)."""
    return masked_pair_mean(support_maps.mean(dim=(3, 4)), support_mask)


def support_tokens(
    support_maps: torch.Tensor, support_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """S (B, N, D, s, s) -> tokens (B, N*s*s, D) and their key-padding mask (True = ignore)."""
    b, n, d, s, _ = support_maps.shape
    tokens = support_maps.permute(0, 1, 3, 4, 2).reshape(b, n * s * s, d)
    padding = (~support_mask)[:, :, None].expand(b, n, s * s).reshape(b, n * s * s)
    return tokens, padding


class ContextEncoder(nn.Module):
    """Each real (input, output) pair -> a (D, s, s) map; padded slots stay exactly zero and cost nothing."""

    def __init__(self, hidden_dim: int, downsample: int):
        super().__init__()
        d = hidden_dim
        self.colour = nn.Embedding(NUM_INPUT_TOKENS, d // 2)
        self.position = nn.Parameter(torch.randn(MAX_GRID_SIDE, MAX_GRID_SIDE, d // 2) * 0.02)
        self.embed = nn.Sequential(nn.Linear(d, d), nn.LayerNorm(d))
        self.input_branch = nn.Sequential(conv_block(d, d, 3), conv_block(d, d, 3))
        self.output_branch = nn.Sequential(conv_block(d, d, 3), conv_block(d, d, 3))
        self.fuse = nn.Sequential(conv_block(3 * d, d, 1), conv_block(d, d, 3))
        self.downsample = nn.Sequential(nn.AdaptiveAvgPool2d(downsample), conv_block(d, d, 3))
        self.pooled_position = nn.Parameter(torch.randn(1, d, downsample, downsample) * 0.02)

    def embed_grid(self, grid: torch.Tensor) -> torch.Tensor:
        m, h, w = grid.shape
        position = self.position[:h, :w].expand(m, h, w, -1)
        x = self.embed(torch.cat([self.colour(grid), position], dim=-1))
        return x.permute(0, 3, 1, 2)

    def encode_pairs(self, inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        """(M, L, L) x 2 -> (M, D, s, s)."""
        # On large canvases the embedding (a per-cell Linear + LN) is recomputed in the backward rather
        # than kept; below them keeping it is ~3% faster and the memory peak is set by the large ones.
        pixels = inputs.shape[-2] * inputs.shape[-1]
        x_in = self.input_branch(recompute_if_large(pixels, self.embed_grid, inputs))
        x_out = self.output_branch(recompute_if_large(pixels, self.embed_grid, outputs))
        fused = self.fuse(torch.cat([x_in, x_out, x_out - x_in], dim=1))
        return self.downsample(fused) + self.pooled_position

    def forward(
        self,
        support_inputs: torch.Tensor,
        support_outputs: torch.Tensor,
        support_mask: torch.Tensor,
        canvases: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """canvases (B,): encode each sample's pairs on a C x C canvas of its own (rlan.model.canvas);
        None: on the batch's canvas."""
        b, n, side, _ = support_inputs.shape
        flat_mask = support_mask.reshape(b * n)
        inputs = support_inputs.reshape(b * n, side, side)
        outputs = support_outputs.reshape(b * n, side, side)
        if canvases is None:
            pair_canvases = torch.full_like(flat_mask, side, dtype=torch.long)
        else:
            pair_canvases = canvases.to(flat_mask.device).repeat_interleave(n)
        groups = canvas_groups(pair_canvases, flat_mask)
        _, d, s, _ = self.pooled_position.shape
        if not groups:
            return self.pooled_position.new_zeros(b, n, d, s, s)
        parts = [
            self.encode_pairs(
                fit_canvas(inputs[g.index], g.side, PAD), fit_canvas(outputs[g.index], g.side, PAD)
            )
            for g in groups
        ]
        real = parts[0] if len(parts) == 1 else torch.cat(parts)
        index = torch.cat([g.index for g in groups])
        return real.new_zeros(b * n, d, s, s).index_copy(0, index, real).view(b, n, d, s, s)


class FiLM(nn.Module):
    """F' = gamma * F + beta with gamma = 2 sigmoid(W_g c) (identity at init-ish), beta = W_b c."""

    def __init__(self, hidden_dim: int):
        super().__init__()
        self.gamma = nn.Linear(hidden_dim, hidden_dim)
        self.beta = nn.Linear(hidden_dim, hidden_dim)

    def forward(self, features: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        gamma = 2.0 * torch.sigmoid(self.gamma(context))
        return gamma[:, :, None, None] * features + self.beta(context)[:, :, None, None]


class CrossAttentionInjector(nn.Module):
    """Each query pixel attends to the N*s*s support tokens; post-norm residual + FFN (D -> 4D -> D).

    Unlike the original, padded slots are masked out of the keys, so their number changes nothing.
    """

    def __init__(self, hidden_dim: int, num_heads: int, dropout: float):
        super().__init__()
        d = hidden_dim
        self.attn = nn.MultiheadAttention(d, num_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.norm2 = nn.LayerNorm(d)
        self.drop = Dropout(dropout)

    def forward(self, features: torch.Tensor, support_maps: torch.Tensor, support_mask: torch.Tensor):
        b, d, h, w = features.shape
        x = features.flatten(2).transpose(1, 2)
        attended = attend(self.attn, x, project_keys(self.attn, *support_tokens(support_maps, support_mask)))
        x = self.norm1(x + self.drop(attended))
        x = self.norm2(x + self.drop(recompute_if_large(h * w, self.ffn, x)))  # (B, HW, 4D) hidden
        return x.transpose(1, 2).reshape(b, d, h, w)
