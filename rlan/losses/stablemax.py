"""Stablemax: a softmax without exp (reference 4.1).

s(x) = x + 1 for x >= 0 and 1 / (1 - x) for x < 0 is positive, monotone and grows only linearly, so
the normaliser cannot overflow at the logit magnitudes the solver produces. Both functions compute in
float64 (the ratios of a 1e4 logit to a 1e-4 one need the mantissa) and return `dtype`, default the
input's dtype; the task losses ask for float64 and cast back after the per-pixel arithmetic.
"""

from __future__ import annotations

import torch


def _s(x: torch.Tensor) -> torch.Tensor:
    # Each branch sees only its own half-line, so the unused branch never divides by zero (which would
    # turn the where-gradient into inf * 0 = NaN).
    return torch.where(x >= 0, x.clamp(min=0) + 1.0, 1.0 / (1.0 - x.clamp(max=0)))


def stablemax(x: torch.Tensor, dim: int = -1, dtype: torch.dtype | None = None) -> torch.Tensor:
    """s(x) / sum_j s(x_j) along dim, computed in float64."""
    s = _s(x.double())
    return (s / s.sum(dim=dim, keepdim=True)).to(dtype or x.dtype)


def log_stablemax(x: torch.Tensor, dim: int = -1, dtype: torch.dtype | None = None) -> torch.Tensor:
    """ln s(x) - ln sum_j s(x_j) along dim, computed in float64."""
    s = _s(x.double())
    return (s.log() - s.sum(dim=dim, keepdim=True).log()).to(dtype or x.dtype)
