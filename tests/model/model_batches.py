"""Small random batches and models for the model tests (hidden 32 keeps the folder fast)."""

from __future__ import annotations

import torch

from rlan.config import ModelConfig
from rlan.constants import PAD
from rlan.model import RLAN

SMALL = dict(hidden_dim=32, max_clues=3, num_solver_steps=2, context_downsample=4)


def random_batch(batch: int, pairs: int, side: int, seed: int = 0, grid_side: int | None = None):
    """Random colour grids on a side x side canvas; each grid fills its top-left grid_side square."""
    g = torch.Generator().manual_seed(seed)
    grid_side = grid_side or side
    inputs = torch.full((batch, pairs, side, side), PAD, dtype=torch.long)
    outputs = torch.full((batch, pairs, side, side), PAD, dtype=torch.long)
    query = torch.full((batch, side, side), PAD, dtype=torch.long)
    inputs[..., :grid_side, :grid_side] = torch.randint(
        0, 10, (batch, pairs, grid_side, grid_side), generator=g
    )
    outputs[..., :grid_side, :grid_side] = torch.randint(
        0, 10, (batch, pairs, grid_side, grid_side), generator=g
    )
    query[:, :grid_side, :grid_side] = torch.randint(0, 10, (batch, grid_side, grid_side), generator=g)
    mask = torch.ones(batch, pairs, dtype=torch.bool)
    return inputs, outputs, mask, query


def small_model(seed: int = 0, **overrides) -> RLAN:
    torch.manual_seed(seed)
    return RLAN(ModelConfig(**{**SMALL, **overrides}))
