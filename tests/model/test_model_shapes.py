"""Shapes of every RLANOutput field, and that padded support slots change nothing."""

from __future__ import annotations

import pytest
import torch

from rlan.constants import NUM_CLASSES
from rlan.model import ModelStages
from tests.model.model_batches import random_batch, small_model


@pytest.mark.parametrize("side,pairs", [(1, 1), (5, 2), (13, 3), (30, 4)])
def test_output_shapes_for_canvas_sizes_and_pair_counts(side, pairs):
    model = small_model(context_downsample=8)
    b, k, d = 2, 3, 32
    out = model(*random_batch(b, pairs, side))
    assert out.logits.shape == (b, NUM_CLASSES, side, side)
    assert len(out.all_logits) == 1 and out.logits is out.all_logits[-1]  # the head runs on the last step
    assert out.attention_maps.shape == (b, k, side, side)
    assert out.centroids.shape == (b, k, 2)
    assert out.stop_logits.shape == out.confidences.shape == (b, k)
    assert out.clues_used.shape == (b,)
    assert out.support_maps.shape == (b, pairs, d, 8, 8)
    assert out.extras["context"].shape == (b, d)
    for delta in (out.lora.gru_reset, out.lora.gru_update, out.lora.gru_candidate, out.lora.output_head):
        assert delta.shape == (b, d, d)
    assert out.lora.context.shape == (b, d) and out.lora.reg_loss.dim() == out.lora.norm.dim() == 0
    assert all(x.dtype == torch.float32 for x in (out.logits, out.attention_maps, out.support_maps))


def test_padded_slots_of_support_maps_are_exactly_zero():
    model = small_model().eval()
    inputs, outputs, mask, _ = random_batch(3, 3, 7)
    mask[0, 1:] = False
    mask[2, 2] = False
    maps = model.encode_support(inputs, outputs, mask)
    assert maps[~mask].abs().max().item() == 0.0
    assert maps[mask].abs().min(dim=-1).values.max().item() > 0.0


@pytest.mark.parametrize(
    "stages",
    [ModelStages(cross_attention=False), ModelStages()],
    ids=["film", "cross_attention"],
)
def test_extra_masked_support_slot_with_random_colours_changes_nothing(stages):
    model = small_model().eval()
    inputs, outputs, mask, query = random_batch(3, 3, 9, seed=1)
    mask[1, 2] = False  # samples with different numbers of real pairs
    g = torch.Generator().manual_seed(7)
    extra_in = torch.randint(0, 11, (3, 1, 9, 9), generator=g)
    extra_out = torch.randint(0, 11, (3, 1, 9, 9), generator=g)
    with torch.no_grad():
        base = model(inputs, outputs, mask, query, stages)
        more = model(
            torch.cat([inputs, extra_in], 1),
            torch.cat([outputs, extra_out], 1),
            torch.cat([mask, torch.zeros(3, 1, dtype=torch.bool)], 1),
            query,
            stages,
        )
    for a, b in [
        (base.logits, more.logits),
        (base.stop_logits, more.stop_logits),
        (base.attention_maps, more.attention_maps),
        (base.lora.output_head, more.lora.output_head),
    ]:
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert more.support_maps[:, -1].abs().max().item() == 0.0
