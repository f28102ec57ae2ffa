"""The dihedral group D4 and colour permutations on tensors (the last two dims are rows, cols).

Transform ids and names are rlan.data.augment's (which works on numpy): 0 identity, 1 rot90, 2 rot180,
3 rot270 (counter-clockwise), 4 flip_lr, 5 flip_ud, 6 transpose, 7 anti-transpose. The rotations and
transposes need a square canvas to keep the shape.
"""

from __future__ import annotations

import torch

from rlan.data.augment import D4_NAMES, INVERSE_D4
from rlan.data.constants import NUM_COLORS

__all__ = [
    "D4_NAMES",
    "INVERSE_D4",
    "apply_d4",
    "invert_d4",
    "sample_d4",
    "random_color_permutation",
    "permute_colors",
    "unpermute_class_axis",
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
