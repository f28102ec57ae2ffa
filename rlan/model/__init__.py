"""The RLAN model: one module per part (encoder, context, saliency, msre, hyper_lora, solver), in rlan.py."""

from __future__ import annotations

import torch.nn as nn

from rlan.model.output import LoraDeltas, ModelStages, RLANOutput
from rlan.model.rlan import RLAN

__all__ = ["RLAN", "ModelStages", "RLANOutput", "LoraDeltas", "count_parameters", "format_parameter_counts"]


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
