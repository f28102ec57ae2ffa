"""Each sample on a canvas of its own: the smallest of model.canvas_sides that holds its grids.

A batch pads every sample to its largest grid L. Computed on that L x L canvas, a sample's result would
depend on its batch-mates: the padding feeds its 3x3 convolutions and GroupNorm statistics, and its support
maps are pooled over the padded area, so a prediction would change with the batch it was drawn into (or
the evaluation batch size). With canvas_sides the model groups the samples by their canvas C (the smallest
listed side >= the sample's side S; S itself past the last) and runs each group on a C x C crop or pad of the
batch: a result depends on the sample alone, and a batch padded past its grids costs what its grids cost.

Why sides from a list and not each sample's exact S: every group is a whole forward, and its fixed cost per
operator call (about 28,000 calls per training step at h128) outweighs the FLOPs saved on close sizes.
Exact sides (canvas_sides 1..30) made the learnable config's step 1.75x slower (4 groups per batch of 8);
the default, the size buckets' boundaries, keeps each training batch on one canvas.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from rlan.constants import PAD
from rlan.data.collate import top_left_sizes


class CanvasGroup(NamedTuple):
    side: int
    index: torch.Tensor  # (n,) positions in the batch of the samples computed on this side


def sample_sides(*grids: torch.Tensor) -> torch.Tensor:
    """(B,) the side of the smallest top-left square holding every non-PAD cell of each sample's grids
    (each (B, ..., L, L)); at least 1. For collated batches it is their `canvas_sizes`."""
    side = None
    for g in grids:
        rows, cols = top_left_sizes(g.reshape(g.shape[0], -1, *g.shape[-2:]), PAD)
        widest = torch.maximum(rows, cols).amax(1)
        side = widest if side is None else torch.maximum(side, widest)
    return side.clamp_min(1)


def canvas_for(sides: torch.Tensor, canvas_sides: Sequence[int]) -> torch.Tensor:
    """(B,) each sample's canvas: the smallest of canvas_sides >= its side, its own side past the last."""
    listed = torch.tensor(canvas_sides, device=sides.device, dtype=sides.dtype)
    slot = torch.searchsorted(listed, sides)
    return torch.where(slot < len(listed), listed[slot.clamp(max=len(listed) - 1)], sides)


def canvas_groups(canvases: torch.Tensor, include: torch.Tensor | None = None) -> list[CanvasGroup]:
    """The samples (where `include`) grouped by canvas, smallest first."""
    keep = torch.ones_like(canvases, dtype=torch.bool) if include is None else include
    kept, positions = canvases[keep], keep.nonzero().flatten()
    return [CanvasGroup(side, positions[kept == side]) for side in sorted(set(kept.tolist()))]


def fit_canvas(x: torch.Tensor, side: int, value: float = 0.0) -> torch.Tensor:
    """(..., L, L) -> (..., side, side): cropped, or padded right and below with `value`."""
    extra = side - x.shape[-1]
    if extra <= 0:
        return x[..., :side, :side]
    return F.pad(x, (0, extra, 0, extra), value=value)


def canvas_work(batch: dict, canvas_sides: Sequence[int] | None) -> float:
    """What a collated batch's FLOPs scale with among batches of one shape: the cells the model computes
    on, the sum over samples of C^2 (1 + real support pairs), C its canvas (the batch's without sides)."""
    pairs = batch["support_mask"].sum(1).double()
    if canvas_sides is None:
        canvases = torch.full_like(pairs, batch["query_inputs"].shape[-1])
    else:
        canvases = canvas_for(batch["canvas_sizes"], canvas_sides).double()
    return float((canvases.square() * (1 + pairs)).sum())
