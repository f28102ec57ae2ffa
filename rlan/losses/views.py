"""Views of a collated batch for the equivariance losses: each grid of the batch transformed (D4, colours) on its
own canvas, as evaluation's TTA views are, and the output size a prediction decodes to."""

from __future__ import annotations

import torch

from rlan.constants import OUTSIDE, PAD
from rlan.losses.d4 import anchored_d4, permute_colors
from rlan.model.canvas import sample_sides


def batch_sides(batch: dict) -> torch.Tensor:
    """(B,) each sample's side S: the batch's `canvas_sizes`, else read off its grids (as RLAN.forward does)."""
    sizes = batch.get("canvas_sizes")
    if sizes is None:
        return sample_sides(*(batch[k] for k in ("support_inputs", "support_outputs", "query_inputs")))
    return sizes.to(batch["query_inputs"].device)


def view_grids(grids: torch.Tensor, transform: int, sides: torch.Tensor, color_perm=None) -> torch.Tensor:
    """One view of PAD-padded top-left grids: colours recoloured first, then each grid transformed on its
    own and placed top-left again (rlan.losses.d4.anchored_d4), as evaluation's TTA views are built."""
    if color_perm is not None:
        grids = permute_colors(grids, color_perm)
    return anchored_d4(grids, transform, sides, PAD)


def transform_batch_inputs(batch: dict, transform: int, color_perm: torch.Tensor | None = None):
    """(support_inputs, support_outputs, support_mask, query_inputs) of one view of the batch."""
    sides = batch_sides(batch)
    return (
        view_grids(batch["support_inputs"], transform, sides, color_perm),
        view_grids(batch["support_outputs"], transform, sides, color_perm),
        batch["support_mask"],
        view_grids(batch["query_inputs"], transform, sides, color_perm),
    )


def predicted_sizes(logits: torch.Tensor, sides: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) heights and widths that decode_prediction reads off the argmax of (B, C, L, L) logits:
    the run of non-OUTSIDE cells down column 0 and along row 0 of the S x S canvas, at least 1."""
    pred = logits.argmax(1)
    line = torch.arange(pred.shape[-1], device=pred.device)
    within = line[None, :] < sides[:, None]
    down = (pred[:, :, 0] != OUTSIDE) & within
    along = (pred[:, 0, :] != OUTSIDE) & within
    return down.long().cumprod(1).sum(1).clamp(min=1), along.long().cumprod(1).sum(1).clamp(min=1)
