"""D4 and colour augmentation with exact inverses (used for training views and for TTA)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlan.constants import NUM_COLORS

# 0 identity, 1 rot90 (counter-clockwise), 2 rot180, 3 rot270, 4 flip left-right, 5 flip up-down,
# 6 transpose, 7 anti-transpose. INVERSE_D4[k] undoes transform k.
D4_NAMES = ("identity", "rot90", "rot180", "rot270", "flip_lr", "flip_ud", "transpose", "anti_transpose")
INVERSE_D4 = (0, 3, 2, 1, 4, 5, 6, 7)


def apply_d4(grid: np.ndarray, k: int) -> np.ndarray:
    """Transform k of the dihedral group on the last two axes."""
    if k == 0:
        return grid
    if k in (1, 2, 3):
        return np.rot90(grid, k, axes=(-2, -1))
    if k == 4:
        return grid[..., :, ::-1]
    if k == 5:
        return grid[..., ::-1, :]
    if k == 6:
        return np.swapaxes(grid, -2, -1)
    if k == 7:
        return np.rot90(grid, 2, axes=(-2, -1)).swapaxes(-2, -1)
    raise ValueError(f"D4 transform id must be 0-7, got {k}")


def invert_d4(grid: np.ndarray, k: int) -> np.ndarray:
    return apply_d4(grid, INVERSE_D4[k])


def random_color_perm(rng: np.random.Generator) -> np.ndarray:
    """perm[old] = new, black (0) fixed, colours 1-9 shuffled."""
    return np.concatenate([[0], 1 + rng.permutation(NUM_COLORS - 1)]).astype(np.int64)


@dataclass(frozen=True)
class Augmentation:
    """One view of a sample: colour permutation first, then the D4 transform (TRM's order)."""

    dihedral: int = 0
    color_perm: tuple[int, ...] | None = None  # perm[old] = new, or None for identity

    def apply(self, grid: np.ndarray) -> np.ndarray:
        if self.color_perm is not None:
            grid = np.asarray(self.color_perm, dtype=np.int64)[grid]
        return np.ascontiguousarray(apply_d4(grid, self.dihedral))

    def invert(self, grid: np.ndarray) -> np.ndarray:
        grid = invert_d4(grid, self.dihedral)
        if self.color_perm is not None:
            grid = np.argsort(np.asarray(self.color_perm, dtype=np.int64))[grid]
        return np.ascontiguousarray(grid)

    @property
    def is_identity(self) -> bool:
        return self.dihedral == 0 and self.color_perm is None


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """Seeded from (seed, epoch, index): runs reproduce, epochs differ, and so do DataLoader workers."""
    return np.random.default_rng([seed, epoch, index])


def random_augmentation(rng: np.random.Generator, color_prob: float, dihedral: bool) -> Augmentation:
    perm = tuple(int(c) for c in random_color_perm(rng)) if rng.random() < color_prob else None
    return Augmentation(int(rng.integers(8)) if dihedral else 0, perm)


def tta_views(num_color_perms: int, seed: int) -> list[Augmentation]:
    """8 D4 transforms x n colour permutations; the first colour view is the identity."""
    rng = np.random.default_rng(seed)
    perms: list[tuple[int, ...] | None] = [None]
    perms += [tuple(int(c) for c in random_color_perm(rng)) for _ in range(num_color_perms - 1)]
    return [Augmentation(k, perm) for perm in perms for k in range(8)]
