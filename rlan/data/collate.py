"""Samples onto canvases: encode grids, collate a batch, decode a predicted canvas back to a grid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rlan.constants import OUTSIDE, PAD
from rlan.data.augment import Augmentation
from rlan.data.tasks import Grid, Pair


@dataclass(frozen=True)
class Sample:
    """One query of one task, with its support, already augmented."""

    task_id: str
    query_index: int  # which pair of the task is the query (see rlan.data.dataset.QuerySpec)
    support: tuple[Pair, ...]
    query_input: Grid
    query_output: Grid | None
    augmentation: Augmentation = Augmentation()

    @property
    def canvas_size(self) -> int:
        """S: the largest side among the grids known at inference time (support and query input).

        The target is not included, so training and evaluation see the same canvas; the few targets
        larger than every known grid (8 of 416 ARC-AGI-1 training queries) are cropped to it.
        """
        grids = [g for pair in self.support for g in pair] + [self.query_input]
        return max(max(g.shape) for g in grids)


def encode_input(grid: Grid, side: int) -> np.ndarray:
    canvas = np.full((side, side), PAD, dtype=np.int64)
    h, w = min(grid.shape[0], side), min(grid.shape[1], side)
    canvas[:h, :w] = grid[:h, :w]
    return canvas


def encode_target(grid: Grid, side: int) -> np.ndarray:
    """Colours inside the grid, OUTSIDE on the rest of the canvas (the grid is cropped to the canvas)."""
    canvas = np.full((side, side), OUTSIDE, dtype=np.int64)
    h, w = min(grid.shape[0], side), min(grid.shape[1], side)
    canvas[:h, :w] = grid[:h, :w]
    return canvas


def decode_prediction(canvas: np.ndarray) -> Grid:
    """A predicted canvas (class ids, cropped to the sample's canvas S x S) back to a grid.

    Rule: the height is the run of non-OUTSIDE cells down column 0, the width the run along row 0
    (each at least 1); the grid is that top-left block, and any OUTSIDE left inside it reads as 0.
    """
    canvas = np.asarray(canvas)
    inside_col = canvas[:, 0] != OUTSIDE
    inside_row = canvas[0, :] != OUTSIDE
    h = int(np.argmin(inside_col)) if not inside_col.all() else canvas.shape[0]
    w = int(np.argmin(inside_row)) if not inside_row.all() else canvas.shape[1]
    block = canvas[: max(h, 1), : max(w, 1)].copy()
    block[block == OUTSIDE] = 0
    return block.astype(np.int64)


def top_left_sizes(grids: torch.Tensor, blank: int = PAD) -> tuple[torch.Tensor, torch.Tensor]:
    """Heights and widths (...) of the top-left grids on (..., L, L) canvases whose other cells are
    `blank`: the rows and columns that hold any other cell (0 for an empty canvas)."""
    filled = grids != blank
    return filled.any(-1).sum(-1), filled.any(-2).sum(-1)


def collate_samples(samples: Sequence[Sample]) -> dict[str, Any]:
    """Pad a list of samples to the batch's largest canvas L and its largest support count N."""
    side = max(s.canvas_size for s in samples)
    slots = max(len(s.support) for s in samples)
    b = len(samples)
    support_inputs = np.full((b, slots, side, side), PAD, dtype=np.int64)
    support_outputs = np.full((b, slots, side, side), PAD, dtype=np.int64)
    support_mask = np.zeros((b, slots), dtype=bool)
    query_inputs = np.full((b, side, side), PAD, dtype=np.int64)
    query_targets = np.full((b, side, side), OUTSIDE, dtype=np.int64)
    target_mask = np.zeros((b, side, side), dtype=bool)
    canvas_sizes = np.zeros(b, dtype=np.int64)
    target_sizes = np.zeros((b, 2), dtype=np.int64)
    for i, sample in enumerate(samples):
        s = sample.canvas_size
        for j, (grid_in, grid_out) in enumerate(sample.support):
            support_inputs[i, j, :s, :s] = encode_input(grid_in, s)
            support_outputs[i, j, :s, :s] = encode_input(grid_out, s)
        support_mask[i, : len(sample.support)] = True
        query_inputs[i, :s, :s] = encode_input(sample.query_input, s)
        if sample.query_output is not None:
            query_targets[i, :s, :s] = encode_target(sample.query_output, s)
            target_sizes[i] = [min(sample.query_output.shape[0], s), min(sample.query_output.shape[1], s)]
        target_mask[i, :s, :s] = True
        canvas_sizes[i] = s
    return {
        "support_inputs": torch.from_numpy(support_inputs),
        "support_outputs": torch.from_numpy(support_outputs),
        "support_mask": torch.from_numpy(support_mask),
        "query_inputs": torch.from_numpy(query_inputs),
        "query_targets": torch.from_numpy(query_targets),
        "target_mask": torch.from_numpy(target_mask),
        "canvas_sizes": torch.from_numpy(canvas_sizes),
        "target_sizes": torch.from_numpy(target_sizes),
        "task_ids": [s.task_id for s in samples],
        "query_indices": [s.query_index for s in samples],
        "augmentations": [s.augmentation for s in samples],
    }


def move_batch(batch: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    """Tensors to the device (non-blocking where pinned); python lists stay as they are."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
