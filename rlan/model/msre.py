"""Multi-Scale Relative Encoding (ref 3.5): every pixel's position relative to each clue centroid."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from rlan.constants import MAX_GRID_SIDE, PAD
from rlan.data.collate import top_left_sizes

NUM_COORDS = 6


def grid_sizes(query_inputs: torch.Tensor) -> torch.Tensor:
    """(B, 2) true (height, width) of each top-left grid, from its non-PAD cells (at least 1)."""
    rows, cols = top_left_sizes(query_inputs, PAD)
    return torch.stack([rows, cols], 1).clamp_min(1).float()


def relative_coordinates(centroids: torch.Tensor, sizes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, K, H, W, 6): offsets at two scales, normalised log-distance and angle, per pixel and clue."""
    centre_r = centroids[..., 0] * (h - 1)
    centre_c = centroids[..., 1] * (w - 1)
    rows = torch.arange(h, device=centroids.device, dtype=centroids.dtype)
    cols = torch.arange(w, device=centroids.device, dtype=centroids.dtype)
    dr = (rows[None, None, :] - centre_r[..., None])[..., :, None].expand(*centroids.shape[:2], h, w)
    dc = (cols[None, None, :] - centre_c[..., None])[..., None, :].expand(*centroids.shape[:2], h, w)
    grid_h, grid_w = sizes[:, 0, None, None, None], sizes[:, 1, None, None, None]
    longest = torch.maximum(grid_h, grid_w)
    distance = torch.log1p(torch.sqrt(dr**2 + dc**2 + 1e-6))
    diagonal = torch.log1p(torch.sqrt(grid_h**2 + grid_w**2)) + 1e-6
    angle = (torch.atan2(dc, dr) + math.pi) / (2 * math.pi)
    return torch.stack(
        [dr / MAX_GRID_SIDE, dc / MAX_GRID_SIDE, dr / longest, dc / longest, distance / diagonal, angle], -1
    )


class MSRE(nn.Module):
    """F (B, D, H, W) + centroids (B, K, 2) -> clue features Z (B, K, D, H, W)."""

    def __init__(self, hidden_dim: int, encoding_dim: int, num_freq: int):
        super().__init__()
        d = hidden_dim
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(num_freq, dtype=torch.float32), False)
        in_dim = NUM_COORDS * (1 + 2 * num_freq)
        self.coord_mlp = nn.Sequential(
            nn.Linear(in_dim, d), nn.GELU(), nn.Linear(d, encoding_dim), nn.LayerNorm(encoding_dim)
        )
        self.fuse = nn.Linear(d + encoding_dim, d)  # on cat[F, coord encoding], applied in two parts
        self.norm = nn.LayerNorm(d)

    def forward(self, features: torch.Tensor, centroids: torch.Tensor, query_inputs: torch.Tensor):
        b, d, h, w = features.shape
        coords = relative_coordinates(centroids, grid_sizes(query_inputs), h, w)
        angles = coords[..., None] * self.freqs
        fourier = torch.cat([torch.sin(angles), torch.cos(angles)], -1).flatten(-2)
        encoding = self.coord_mlp(torch.cat([coords, fourier], -1))  # (B, K, H, W, E)
        # Linear(cat[F, enc]) = W_F F + W_E enc: the W_F F half is shared by all K clues, computed once.
        shared = F.linear(features.permute(0, 2, 3, 1), self.fuse.weight[:, :d])
        per_clue = F.linear(encoding, self.fuse.weight[:, d:], self.fuse.bias)
        z = self.norm(F.gelu(shared[:, None] + per_clue))
        return z.permute(0, 1, 4, 2, 3)
