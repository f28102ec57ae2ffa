"""Meta-learning losses (reference 5.1-5.3; fixes 3 and 4). Each call returns (loss, diagnostics), the loss a
scalar tensor with gradient and the diagnostics plain floats; the caller weights the loss (and the cap
factor of rlan.losses.meta_cap) and backpropagates it.

  loo_loss                      predict each demo output from its input and the other demos (5.1)
  OutputEquivarianceLoss        pull the prediction toward the consensus of its D4 (+colour) views (fix 3)
  AugmentationEquivarianceLoss  LoRA deltas of D4-augmented support grids vs the original's (fix 4)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from rlan.constants import OUTSIDE, PAD
from rlan.losses.d4 import (
    apply_d4,
    random_color_permutation,
    sample_d4,
    unanchor_d4,
    unpermute_class_axis,
)
from rlan.losses.views import batch_sides, predicted_sizes, transform_batch_inputs, view_grids
from rlan.model.output import LoraDeltas, ModelStages

LORA_TARGETS = ("gru_reset", "gru_update", "gru_candidate", "output_head")
Pooling = Literal["simple", "d4"]


def _grad_safe_zero(model: torch.nn.Module) -> torch.Tensor:
    """A zero that is connected to the model, so `.backward()` on it works and leaves zero gradients."""
    return next(model.parameters()).sum() * 0.0


def context_pool(model, pooling: Pooling | None = None) -> Callable:
    """A HyperLoRA pooling: `pooling` if given, else the one the model's forward uses (LOO predicts the
    held-out pair the way the forward predicts the query)."""
    pooling = pooling or model.config.hyperlora_pooling
    if pooling == "simple":
        return model.hyper_lora.pool_context_simple
    if pooling == "d4":
        return model.hyper_lora.pool_context
    raise ValueError(f"pooling must be 'simple' or 'd4', got {pooling!r}")


def canvas_cells(batch: dict, count: int, side: int, device) -> torch.Tensor:
    """(count, side, side) bool: each sample's own S x S canvas (canvas_sizes), the cells the task loss
    counts for the query; without canvas_sizes, the whole batch canvas."""
    sizes = batch.get("canvas_sizes")
    if sizes is None:
        return torch.ones(count, side, side, dtype=torch.bool, device=device)
    line = torch.arange(side, device=device)
    sizes = sizes.to(device)[:, None]
    inside = line[None, :] < sizes  # (B, side)
    return inside[:, :, None] & inside[:, None, :]


# -------------------------------------------------------------------------------------------- LOO
def loo_loss(
    model,
    batch: dict,
    stages: ModelStages,
    max_loo_pairs: int = 4,
    detach_support: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Leave-one-out: for holdout slot i < min(max_loo_pairs, N) of every sample with >= 2 real pairs and
    a real pair in slot i, predict demo output i from demo input i, with context and LoRA deltas from the
    other real pairs (slot i masked out and zeroed). All holdouts run as one batch.

    Target: demo output i, OUTSIDE where it is PAD. Cells: the sample's own S x S canvas, as for the query
    (so the held-out output's size is predicted too). Loss: plain softmax cross-entropy (as the original),
    mean over each holdout's cells, then over holdouts. detach_support=True (the original) encodes the
    support maps without gradient, so the context encoder learns nothing from LOO. Deltas are used when
    the model has HyperLoRA and stages.hyperlora; otherwise the held-out pair is predicted without LoRA.
    Diagnostics: loo_loss, loo_accuracy (pixel accuracy over the counted cells), loo_num_holdouts; with
    no qualifying sample the loss is a grad-safe zero and the diagnostics are 0.
    """
    support_inputs, support_outputs = batch["support_inputs"], batch["support_outputs"]
    support_mask = batch["support_mask"].bool()
    b, n, side, _ = support_inputs.shape
    holdouts = min(max_loo_pairs, n)
    eligible = support_mask[:, :holdouts] & (support_mask.sum(1) >= 2)[:, None]
    sample, slot = eligible.nonzero(as_tuple=True)
    count = sample.numel()
    if count == 0:
        return _grad_safe_zero(model), {"loo_loss": 0.0, "loo_accuracy": 0.0, "loo_num_holdouts": 0}

    sides = batch_sides(batch)  # each sample's own side, as the forward finds it
    with torch.set_grad_enabled(torch.is_grad_enabled() and not detach_support):
        support_maps = model.encode_support(support_inputs, support_outputs, support_mask, sides)
    rows = torch.arange(count, device=sample.device)
    mask = support_mask[sample].clone()
    mask[rows, slot] = False
    maps = support_maps[sample] * mask[:, :, None, None, None].to(support_maps.dtype)

    lora: LoraDeltas | None = None
    if stages.hyperlora and model.hyper_lora is not None:
        lora = model.hyper_lora.compute_deltas(context_pool(model)(maps, mask), stages.delta_scale)
    held_out = support_outputs[sample, slot]
    target = torch.where(held_out == PAD, torch.full_like(held_out, OUTSIDE), held_out)
    query = support_inputs[sample, slot]
    logits = model.forward_with_lora(query, maps, mask, lora, stages, sides[sample]).logits

    cells = canvas_cells(batch, b, side, logits.device)[sample]
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    per_holdout = torch.where(cells, ce, 0.0).sum((1, 2)) / cells.sum((1, 2)).clamp(min=1)
    loss = per_holdout.mean()
    with torch.no_grad():
        correct = ((logits.argmax(1) == target) & cells).sum()
        accuracy = (correct / cells.sum().clamp(min=1)).item()
    return loss, {"loo_loss": loss.item(), "loo_accuracy": accuracy, "loo_num_holdouts": count}


# ---------------------------------------------------------------------------- output equivariance
class OutputEquivarianceLoss:
    """Fix 3. For `num_augmentations` distinct non-identity D4 transforms (sampled with `generator`),
    optionally with a colour permutation of 1-9 (0 and PAD fixed), build the view as evaluation builds a
    TTA view (each grid transformed on its own, placed top-left), run the model under no_grad in its
    current mode with the caller's stages, and map the view's logits back through the exact inverse of
    that view: spatially, with the output size the view's own prediction decodes to, then the class axis
    for colours. The consensus q is the mean of their softmax probabilities.
    Loss = KL(q || p) with p = softmax(original logits), which carries the gradient; per cell
    sum_c q (ln q - ln p), averaged over the cells of batch['target_mask'] per sample, then over the
    samples that have any (the original's mask never applied). Softmax, not stablemax, as the original.
    A model that predicts consistently in every view scores 0, whatever the size of its outputs. (The
    original transformed the whole canvas, which moved grids off the top-left corner where the OUTSIDE
    cells encode the size, and so pulled correct size predictions apart.)
    """

    def __init__(self, num_augmentations: int = 2, color_permutation: bool = False):
        sample_d4(num_augmentations)  # validates the count
        self.num_augmentations = num_augmentations
        self.color_permutation = color_permutation

    def consensus(self, model, batch: dict, stages: ModelStages, generator=None) -> torch.Tensor:
        """(B, C, H, W) mean of the softmax probabilities of the augmented views, in the original frame."""
        total = 0.0
        sides = batch_sides(batch)
        with torch.no_grad():
            for transform in sample_d4(self.num_augmentations, generator):
                perm = random_color_permutation(generator) if self.color_permutation else None
                logits = model(*transform_batch_inputs(batch, transform, perm), stages=stages).logits.float()
                heights, widths = predicted_sizes(logits, sides)
                logits = unanchor_d4(logits, transform, heights, widths, sides)
                if perm is not None:
                    logits = unpermute_class_axis(logits, perm)
                total = total + torch.softmax(logits, dim=1)
        return total / self.num_augmentations

    def __call__(
        self,
        model,
        batch: dict,
        stages: ModelStages,
        original_logits: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """original_logits: the main forward's logits (with gradient), to save a forward; else recomputed."""
        if original_logits is None:
            inputs = (batch["support_inputs"], batch["support_outputs"], batch["support_mask"])
            original_logits = model(*inputs, batch["query_inputs"], stages=stages).logits
        q = self.consensus(model, batch, stages, generator)
        mask = batch["target_mask"].bool()
        q_cells = q.permute(0, 2, 3, 1)[mask]  # (M, C): counted cells only
        log_p = torch.log_softmax(original_logits.float().permute(0, 2, 3, 1)[mask], dim=-1)
        kl = (torch.xlogy(q_cells, q_cells) - q_cells * log_p).sum(-1)
        sample = torch.arange(mask.shape[0], device=mask.device).view(-1, 1, 1).expand_as(mask)[mask]
        sums = kl.new_zeros(mask.shape[0]).index_add(0, sample, kl)
        cells = mask.flatten(1).sum(1)
        has_cells = cells > 0
        if not has_cells.any():
            return original_logits.sum() * 0.0, {"output_equiv_loss": 0.0}
        loss = (sums[has_cells] / cells[has_cells]).mean()
        return loss, {"output_equiv_loss": loss.item()}


# ----------------------------------------------------------------------- context-level equivariance
def delta_distance(original: LoraDeltas, augmented: LoraDeltas) -> torch.Tensor:
    """Mean over the LoRA targets of 0.3 (|orig| - |aug|)^2 + 0.7 (1 - cos(orig, aug)), each a batch mean
    of per-sample flattened deltas; `original` is detached."""
    terms = []
    for target in LORA_TARGETS:
        orig = getattr(original, target).detach().flatten(1).float()
        aug = getattr(augmented, target).flatten(1).float()
        norm_gap = (orig.norm(dim=1) - aug.norm(dim=1)).pow(2).mean()
        cosine_gap = (1.0 - F.cosine_similarity(aug, orig, dim=1)).mean()
        terms.append(0.3 * norm_gap + 0.7 * cosine_gap)
    return torch.stack(terms).mean()


class AugmentationEquivarianceLoss:
    """Context-level equivariance (the consumer of fix 4): LoRA deltas of D4-augmented support vs the original.

    augment='grids' (default) builds views of the support GRIDS the way evaluation builds TTA views (each
    grid transformed on its own and placed top-left, rlan.losses.d4.anchored_d4) and re-encodes them, so
    the gradient reaches the context encoder and HyperLoRA; augment='maps' rotates the original support
    maps (the original's variant). The original side is computed without gradient; loss = delta_distance
    averaged over the transforms.

    pooling is the seed's fix 4 switch and this loss's own setting (training.equivariance_training.pooling);
    the model's forward pooling (model.hyperlora_pooling) is not read:
      'simple'  pool_context_simple on both sides, orientation-sensitive: the loss is non-zero and teaches
                invariance (fix 4 on).
      'd4'      the invariant pooling on both sides (fix 4 off). On maps it is HyperLoRA.pool_context (mean
                over the 8 D4 transforms of the maps). On grids the context encoder itself is not
                D4-equivariant (learned positions), so invariance needs the mean over the grids' whole D4
                orbit, each re-encoded: both sides then average the same 8 contexts and the loss is ~0 with
                no useful gradient, the original's degenerate behaviour reproduced on purpose.
    """

    def __init__(
        self,
        num_augmentations: int = 2,
        pooling: Pooling = "simple",
        augment: Literal["grids", "maps"] = "grids",
    ):
        sample_d4(num_augmentations)
        if augment not in ("grids", "maps"):
            raise ValueError(f"augment must be 'grids' or 'maps', got {augment!r}")
        if pooling not in ("simple", "d4"):
            raise ValueError(f"pooling must be 'simple' or 'd4', got {pooling!r}")
        self.num_augmentations = num_augmentations
        self.pooling = pooling
        self.augment = augment

    def _grid_context(self, model, inputs, outputs, mask, sides) -> torch.Tensor:
        def context(k: int) -> torch.Tensor:
            views = view_grids(inputs, k, sides), view_grids(outputs, k, sides)
            maps = model.encode_support(*views, mask, sides)  # a D4 view keeps each sample's side
            return model.hyper_lora.pool_context_simple(maps, mask)

        if self.pooling == "simple":
            return context(0)
        return torch.stack([context(k) for k in range(8)]).mean(0)

    def __call__(
        self, model, batch: dict, stages: ModelStages, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if model.hyper_lora is None:
            raise ValueError("AugmentationEquivarianceLoss needs a model with HyperLoRA")
        pool = context_pool(model, self.pooling)
        inputs, outputs = batch["support_inputs"], batch["support_outputs"]
        mask = batch["support_mask"].bool()
        sides = batch_sides(batch)
        with torch.no_grad():
            if self.augment == "grids":
                context = self._grid_context(model, inputs, outputs, mask, sides)
            else:
                maps = model.encode_support(inputs, outputs, mask, sides)
                context = pool(maps, mask)
            original = model.hyper_lora.compute_deltas(context, stages.delta_scale)

        losses = []
        for transform in sample_d4(self.num_augmentations, generator):
            if self.augment == "grids":
                aug_inputs = view_grids(inputs, transform, sides)
                aug_outputs = view_grids(outputs, transform, sides)
                aug_context = self._grid_context(model, aug_inputs, aug_outputs, mask, sides)
            else:
                aug_context = pool(apply_d4(maps, transform), mask)
            augmented = model.hyper_lora.compute_deltas(aug_context, stages.delta_scale)
            losses.append(delta_distance(original, augmented))
        loss = torch.stack(losses).mean()
        return loss, {"equiv_loss": loss.item()}
