"""The dihedral group D4 and colour permutations on tensors (the last two dims are rows, cols).

Transform ids and names are rlan.data.augment's (which works on numpy): 0 identity, 1 rot90, 2 rot180,
3 rot270 (counter-clockwise), 4 flip_lr, 5 flip_ud, 6 transpose, 7 anti-transpose. The rotations and
transposes need a square canvas to keep the shape.
"""

from __future__ import annotations

import torch

from rlan.constants import NUM_COLORS
from rlan.data.augment import D4_NAMES, INVERSE_D4
from rlan.data.collate import top_left_sizes

__all__ = [
    "D4_NAMES",
    "INVERSE_D4",
    "apply_d4",
    "invert_d4",
    "sample_d4",
    "random_color_permutation",
    "permute_colors",
    "unpermute_class_axis",
    "anchored_d4",
    "unanchor_d4",
    "transposes_size",
]


def apply_d4(x: torch.Tensor, transform: int) -> torch.Tensor:
    """Apply D4 transform `transform` (an id above) to the last two dims of x."""
    if transform == 0:
        return x
    if transform in (1, 2, 3):
        return torch.rot90(x, transform, dims=(-2, -1))
    if transform == 4:
        return x.flip(-1)
    if transform == 5:
        return x.flip(-2)
    if transform == 6:
        return x.transpose(-2, -1)
    if transform == 7:
        return torch.rot90(x, 2, dims=(-2, -1)).transpose(-2, -1)
    raise ValueError(f"D4 transform id must be 0..7, got {transform}")


def invert_d4(x: torch.Tensor, transform: int) -> torch.Tensor:
    """Undo apply_d4(., transform)."""
    return apply_d4(x, INVERSE_D4[transform])


def sample_d4(count: int, generator: torch.Generator | None = None) -> list[int]:
    """`count` distinct non-identity transform ids (1..7), drawn with `generator`."""
    if not 1 <= count <= 7:
        raise ValueError(f"between 1 and 7 distinct non-identity D4 transforms exist, asked for {count}")
    return [int(t) + 1 for t in torch.randperm(7, generator=generator)[:count]]


def random_color_permutation(generator: torch.Generator | None = None) -> torch.Tensor:
    """(11,) long lookup table: colours 1..9 permuted; 0 and PAD/OUTSIDE (10) map to themselves."""
    perm = torch.arange(NUM_COLORS + 1)
    perm[1:NUM_COLORS] = 1 + torch.randperm(NUM_COLORS - 1, generator=generator)
    return perm


def permute_colors(grid: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Recolour a token grid: cell value c becomes perm[c]."""
    return perm.to(grid.device)[grid]


def unpermute_class_axis(values: torch.Tensor, perm: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Per-class values (logits, probabilities) of a recoloured view back in the original colours: the
    view's class perm[c] is the original's class c."""
    return values.index_select(dim, perm.to(values.device))


# ------------------------------------------------------------------ views anchored at the top-left
# The data pipeline places every grid at the top-left of its canvas and marks the output's size with
# OUTSIDE cells there. Transforming the whole padded canvas would move grids to other corners, a shift no
# real sample has, and would punish a model for predicting the size the way it was taught. A view is
# therefore built the way evaluation's TTA builds it: each grid is transformed on its own and placed
# top-left. Over the sample's S x S canvas this is a bijection (the D4 transform of the canvas followed by
# the cyclic shift that brings the grid back to the corner), so it has an exact inverse for logits too;
# cells beyond S (batch padding) stay where they are.


_SOURCE_CELL = (  # transform id -> (r, c, h, w) -> the source (row, col) of result cell (r, c)
    lambda r, c, h, w: (r, c),
    lambda r, c, h, w: (c, w - 1 - r),
    lambda r, c, h, w: (h - 1 - r, w - 1 - c),
    lambda r, c, h, w: (h - 1 - c, r),
    lambda r, c, h, w: (r, w - 1 - c),
    lambda r, c, h, w: (h - 1 - r, c),
    lambda r, c, h, w: (c, r),
    lambda r, c, h, w: (h - 1 - c, w - 1 - r),
)


def _source_cell(transform: int, r, c, h, w):
    """Transform `transform` of an h x w grid: the source (row, col) of result cell (r, c)."""
    if not 0 <= transform < len(_SOURCE_CELL):
        raise ValueError(f"D4 transform id must be 0..7, got {transform}")
    return _SOURCE_CELL[transform](r, c, h, w)


def anchored_source_index(
    transform: int, heights: torch.Tensor, widths: torch.Tensor, sides: torch.Tensor, canvas: int
) -> torch.Tensor:
    """(..., canvas*canvas) long: for each cell of the view canvas, the flat index of the original cell it
    takes its value from. heights/widths (...): the grid's size in the original frame; sides (...): the
    sample's canvas S. The grid block goes to the transformed block at the top-left; the rest of the S x S
    canvas maps onto the rest, bijectively; cells beyond S map to themselves."""
    device = heights.device
    line = torch.arange(canvas, device=device)
    r, c = line.view(-1, 1).expand(canvas, canvas), line.view(1, -1).expand(canvas, canvas)
    h, w, s = (
        t.to(device).long()[..., None, None] for t in (heights.clamp(min=1), widths.clamp(min=1), sides)
    )
    # Where the grid's corners land under the plain S x S transform: the shift that re-anchors it.
    inverse = INVERSE_D4[transform]
    r0, c0 = _source_cell(inverse, torch.zeros_like(h), torch.zeros_like(w), s, s)
    r1, c1 = _source_cell(inverse, h - 1, w - 1, s, s)
    shift_r, shift_c = torch.minimum(r0, r1), torch.minimum(c0, c1)
    src_r, src_c = _source_cell(transform, (r + shift_r) % s, (c + shift_c) % s, s, s)
    inside = (r < s) & (c < s)
    src_r, src_c = torch.where(inside, src_r, r), torch.where(inside, src_c, c)
    return (src_r * canvas + src_c).flatten(-2)


def anchored_d4(grids: torch.Tensor, transform: int, sides: torch.Tensor, blank: int) -> torch.Tensor:
    """Transform each top-left grid of (B, ..., L, L) on its own and place it top-left again; sides (B,)
    is each sample's canvas S. Cells outside the grid stay `blank`."""
    if transform == 0:
        return grids
    h, w = top_left_sizes(grids, blank)
    side = grids.shape[-1]
    s = sides.view(-1, *([1] * (h.dim() - 1))).expand_as(h)
    index = anchored_source_index(transform, h, w, s, side)
    return grids.flatten(-2).gather(-1, index).view_as(grids)


def transposes_size(transform: int) -> bool:
    """Whether transform swaps a grid's height and width (the rotations by 90 and the transposes)."""
    return transform in (1, 3, 6, 7)


def unanchor_d4(
    values: torch.Tensor, transform: int, view_heights: torch.Tensor, view_widths: torch.Tensor, sides
) -> torch.Tensor:
    """The exact inverse of anchored_d4 on per-cell values (B, C, L, L) of a view, given the size of the
    view's grid (B,) (the decoded size of its prediction) and each sample's canvas S (B,)."""
    if transform == 0:
        return values
    h, w = (view_widths, view_heights) if transposes_size(transform) else (view_heights, view_widths)
    side = values.shape[-1]
    forward = anchored_source_index(transform, h, w, sides, side)  # view cell -> original cell
    back = torch.argsort(forward, dim=-1)  # original cell -> the view cell that holds it
    flat = values.flatten(-2)
    return flat.gather(-1, back[:, None, :].expand_as(flat)).view_as(values)
