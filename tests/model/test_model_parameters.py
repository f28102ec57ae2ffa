"""Parameter counts: totals, per-module breakdown, and parity with the original's verified counts."""

from __future__ import annotations

import torch

from rlan.config import ModelConfig
from rlan.model import RLAN, count_parameters, format_parameter_counts


def test_count_parameters_total_and_breakdown():
    model = RLAN(ModelConfig(hidden_dim=32, max_clues=3, num_solver_steps=2))
    counts = count_parameters(model)
    total = sum(p.numel() for p in model.parameters())
    assert counts["total"] == total
    assert sum(n for name, n in counts.items() if name != "total") == total
    assert set(counts) == {name for name, _ in model.named_children()} | {"total"}


def test_print_parameter_tables_at_hidden_128_and_256():
    torch.manual_seed(0)
    for d in (128, 256):
        model = RLAN(ModelConfig(hidden_dim=d, max_clues=7, num_solver_steps=7))
        print(f"\nRLAN hidden {d}, K=7, T=7\n{format_parameter_counts(model)}")
        assert count_parameters(model)["total"] > 0


def test_counts_match_the_original_modules_at_hidden_256():
    # Reference 3.11/3.7/3.8 (verified on the original): equal counts mean equal layer shapes.
    counts = count_parameters(RLAN(ModelConfig(hidden_dim=256, max_clues=7, num_solver_steps=7)))
    assert counts["encoder"] == 67_712 and counts["feature_proj"] == 66_304
    assert counts["context_encoder"] == 3_940_224
    assert counts["film"] == 131_584 and counts["cross_injector"] == 789_760
    assert counts["dsc"] == 661_249 and counts["msre"] == 109_152
    # core 7,053,322 + cross-attention 330,496 + 257 for the 11th (OUTSIDE) output class
    assert counts["solver"] == 7_053_322 + 330_496 + 257
    # 5,000,448 + the orientation-sensitive pooling (query D + position 8*8*D), fix 4
    assert counts["hyper_lora"] == 5_000_448 + 256 + 64 * 256
