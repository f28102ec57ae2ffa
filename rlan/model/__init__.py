"""The RLAN model: one module per part (encoder, context, saliency, msre, hyper_lora, solver), in rlan.py."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn

from rlan.model.output import LoraDeltas, ModelStages, RLANOutput
from rlan.model.rlan import DEFAULT_STAGES, RLAN

__all__ = [
    "RLAN",
    "ModelStages",
    "RLANOutput",
    "LoraDeltas",
    "count_parameters",
    "format_parameter_counts",
    "run_on_batch",
]

# The collated batch's keys that RLAN.forward takes, in its argument order.
MODEL_INPUTS = ("support_inputs", "support_outputs", "support_mask", "query_inputs")


def run_on_batch(
    model: nn.Module, batch: Mapping[str, torch.Tensor], stages: ModelStages = DEFAULT_STAGES
) -> RLANOutput:
    """The model's forward on a collated batch. `model` is called, so a DDP wrapper syncs as it should."""
    return model(*(batch[key] for key in MODEL_INPUTS), stages)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameters per top-level child module (in definition order) plus 'total'."""
    counts = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    own = sum(p.numel() for p in model.parameters(recurse=False))
    if own:
        counts["(own)"] = own
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


def format_parameter_counts(model: nn.Module) -> str:
    counts = count_parameters(model)
    width = max(len(name) for name in counts)
    lines = [f"{'module':<{width}}  {'params':>12}  {'share':>6}"]
    for name, n in counts.items():
        if name == "total":
            lines.append("-" * (width + 22))
        lines.append(f"{name:<{width}}  {n:>12,}  {n / max(counts['total'], 1):>6.1%}")
    return "\n".join(lines)
