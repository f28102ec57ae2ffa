"""What the model returns, and the staging switches a caller passes to each forward."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class ModelStages:
    """Which staged modules take part in one forward.

    Passed per call instead of flipped on the model object, so an evaluation can never leave the
    training run in another stage (the original's staging leak, reference 3.12).
    """

    solver_context: bool = True  # solver cross-attention to the support maps
    cross_attention: bool = True  # CrossAttentionInjector instead of FiLM
    hyperlora: bool = True  # per-task LoRA deltas
    delta_scale: float = 1.0  # multiplies the LoRA deltas (warm-up schedule)
    temperature: float = 1.0  # DSC attention temperature


@dataclass
class LoraDeltas:
    gru_reset: torch.Tensor  # (B, D, D)
    gru_update: torch.Tensor
    gru_candidate: torch.Tensor
    output_head: torch.Tensor
    context: torch.Tensor  # (B, D) pooled support context that produced them
    reg_loss: torch.Tensor  # scalar: weight * sum over targets of mean_b ||raw delta||_F
    norm: torch.Tensor  # scalar: mean per-sample Frobenius norm after the clamp (diagnostic)
    # Optional low-rank form of the same deltas, {target: (left (B, D, r), right (B, r, D))} with
    # delta = left @ right; the solver uses it when present (cheaper). Drop it if you change a delta.
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None

    def rows(self, index: torch.Tensor) -> LoraDeltas:
        """The deltas of the samples at `index` (the scalars, batch figures, stay as they are)."""
        factors = None
        if self.factors is not None:
            factors = {
                k: (a.index_select(0, index), b.index_select(0, index)) for k, (a, b) in self.factors.items()
            }
        per_sample = {f: getattr(self, f).index_select(0, index) for f in PER_SAMPLE_DELTA_FIELDS}
        return LoraDeltas(**per_sample, reg_loss=self.reg_loss, norm=self.norm, factors=factors)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The per-sample tensors (fields, then factors by target), in the order `with_tensors` takes."""
        factors = [t for k in sorted(self.factors or {}) for t in self.factors[k]]
        return (*(getattr(self, f) for f in PER_SAMPLE_DELTA_FIELDS), *factors)

    def with_tensors(self, tensors: tuple[torch.Tensor, ...]) -> LoraDeltas:
        """These deltas with their per-sample tensors replaced by `tensors` (as `tensors` lists them)."""
        n = len(PER_SAMPLE_DELTA_FIELDS)
        factors = None
        if self.factors is not None:
            pairs = iter(tensors[n:])
            factors = {k: (next(pairs), next(pairs)) for k in sorted(self.factors)}
        fields = dict(zip(PER_SAMPLE_DELTA_FIELDS, tensors[:n], strict=True))
        return LoraDeltas(**fields, reg_loss=self.reg_loss, norm=self.norm, factors=factors)


PER_SAMPLE_DELTA_FIELDS = ("gru_reset", "gru_update", "gru_candidate", "output_head", "context")


def joined_deltas(
    template: LoraDeltas,
    parts: list[tuple[torch.Tensor, ...]],
    sizes: list[int],
    inverse: torch.Tensor,
) -> LoraDeltas:
    """The deltas of a batch from its groups' (each `tensors()` + (reg_loss, norm), `sizes` samples),
    in batch order (`inverse` of the groups' concatenated indices). reg_loss and norm are means over
    the samples, so the batch's are the groups' weighted by their sizes."""
    count = len(parts[0]) - 2
    tensors = tuple(torch.cat([p[k] for p in parts]).index_select(0, inverse) for k in range(count))
    total = sum(sizes)
    reg_loss = sum(p[count] * (n / total) for p, n in zip(parts, sizes, strict=True))
    norm = sum(p[count + 1] * (n / total) for p, n in zip(parts, sizes, strict=True))
    joined = template.with_tensors(tensors)
    joined.reg_loss, joined.norm = reg_loss, norm
    return joined


@dataclass
class RLANOutput:
    logits: torch.Tensor  # (B, 11, H, W) final step
    all_logits: list[torch.Tensor]  # [logits]; T tensors (B, 11, H, W) with RecursiveSolver.all_step_logits,
    # where only the last has a graph unless RecursiveSolver.intermediate_grad is set (the losses read the last)
    attention_maps: torch.Tensor  # (B, K, H, W), sums to 1 over valid pixels
    centroids: torch.Tensor  # (B, K, 2) in [0, 1] canvas units (row, col)
    stop_logits: torch.Tensor  # (B, K) raw logits (squashed only if model.stop_logit_squash)
    clues_used: torch.Tensor  # (B,) = sum_k (1 - sigmoid(stop_k))
    confidences: torch.Tensor  # (B, K) 1 - H(attention)/ln(#valid pixels)
    support_maps: torch.Tensor  # (B, N, D, s, s) pooled support features, zero in padded slots
    lora: LoraDeltas | None = None
    extras: dict = field(default_factory=dict)
