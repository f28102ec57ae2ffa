"""Per-pixel encoding of a grid: colour embedding + fixed 2D sinusoid, then feature projection (ref 3.2)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from rlan.constants import MAX_GRID_SIDE, NUM_INPUT_TOKENS
from rlan.model.dropout import Dropout


def sinusoid_1d(length: int, dim: int) -> torch.Tensor:
    """(length, dim) table: sin and cos halves over dim/2 frequencies exp(-ln(1e4) * 2i / dim)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(1e4) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    return torch.cat([torch.sin(position * freq), torch.cos(position * freq)], dim=1)


def sinusoid_2d(side: int, dim: int) -> torch.Tensor:
    """(side, side, dim) fixed table: the first dim/2 channels encode the row, the last dim/2 the column."""
    axis = sinusoid_1d(side, dim // 2)
    rows = axis[:, None, :].expand(side, side, dim // 2)
    cols = axis[None, :, :].expand(side, side, dim // 2)
    return torch.cat([rows, cols], dim=-1).contiguous()


class GridEncoder(nn.Module):
    """(B, H, W) tokens -> (B, H, W, D): [colour, position] (D/2 each) -> Linear, LN, Dropout, x sqrt(D)."""

    def __init__(self, hidden_dim: int, dropout: float):
        super().__init__()
        self.colour = nn.Embedding(NUM_INPUT_TOKENS, hidden_dim // 2)
        std = 1.0 / math.sqrt(hidden_dim)
        nn.init.trunc_normal_(self.colour.weight, std=std, a=-2 * std, b=2 * std)
        # Fixed, so not saved: rebuilt identically from the config.
        self.register_buffer("position", sinusoid_2d(MAX_GRID_SIDE, hidden_dim // 2), persistent=False)
        self.proj = nn.Linear(hidden_dim, hidden_dim)
        nn.init.xavier_uniform_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.norm = nn.LayerNorm(hidden_dim)
        self.drop = Dropout(dropout)
        # TRM-style embedding scale: LN output is unit-variance, the solver expects larger activations.
        self.scale = math.sqrt(hidden_dim)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        b, h, w = grid.shape
        position = self.position[:h, :w].expand(b, h, w, -1)
        x = torch.cat([self.colour(grid), position], dim=-1)
        return self.drop(self.norm(self.proj(x))) * self.scale


class FeatureProjection(nn.Module):
    """(B, H, W, D) -> (B, D, H, W): Linear -> GELU -> LN, then channel-first for the conv layers."""

    def __init__(self, hidden_dim: int):
        super().__init__()
        self.proj = nn.Linear(hidden_dim, hidden_dim)
        self.norm = nn.LayerNorm(hidden_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(nn.functional.gelu(self.proj(x))).permute(0, 3, 1, 2)
