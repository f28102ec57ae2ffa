"""Fix 4: pool_context is exactly D4-invariant, pool_context_simple is orientation-sensitive.

In the original both pooled by global average, so the D4 average was a no-op (reference 3.8, 5.2).
"""

from __future__ import annotations

import pytest
import torch

from rlan.model.hyper_lora import d4_transforms
from tests.model.model_batches import small_model


def support_maps_and_mask():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 4, 32, 4, 4, generator=g)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 1]], dtype=torch.bool)
    return maps * mask[:, :, None, None, None], mask


def test_d4_transforms_are_eight_distinct_maps():
    grid = torch.arange(16.0).view(4, 4)
    views = d4_transforms(grid)
    assert len(views) == 8 and len({tuple(v.flatten().tolist()) for v in views}) == 8


@pytest.mark.parametrize("index", range(8))
def test_pool_context_is_invariant_to_every_d4_transform(index):
    hl = small_model().hyper_lora.eval()
    maps, mask = support_maps_and_mask()
    with torch.no_grad():
        torch.testing.assert_close(
            hl.pool_context(d4_transforms(maps)[index], mask), hl.pool_context(maps, mask), atol=1e-5, rtol=0
        )


def test_pool_context_simple_is_not_d4_invariant_at_init():
    hl = small_model().hyper_lora.eval()
    maps, mask = support_maps_and_mask()
    with torch.no_grad():
        base = hl.pool_context_simple(maps, mask)
        diffs = [(hl.pool_context_simple(v, mask) - base).abs().max().item() for v in d4_transforms(maps)[1:]]
    assert min(diffs) > 1e-4, diffs  # every non-identity transform changes the context


def test_pool_context_is_the_mean_of_simple_over_the_eight_views():
    hl = small_model().hyper_lora.eval()
    maps, mask = support_maps_and_mask()
    with torch.no_grad():
        expected = torch.stack([hl.pool_context_simple(v, mask) for v in d4_transforms(maps)]).mean(0)
        torch.testing.assert_close(hl.pool_context(maps, mask), expected, atol=1e-6, rtol=0)


def test_config_chooses_the_pooling():
    maps, mask = support_maps_and_mask()
    simple = small_model().hyper_lora.eval()
    d4 = small_model(hyperlora_pooling="d4").hyper_lora.eval()
    with torch.no_grad():
        torch.testing.assert_close(simple(maps, mask, 1.0).context, simple.pool_context_simple(maps, mask))
        torch.testing.assert_close(d4(maps, mask, 1.0).context, d4.pool_context(maps, mask))


def test_padded_pair_slots_do_not_change_the_context():
    hl = small_model().hyper_lora.eval()
    maps, mask = support_maps_and_mask()
    with torch.no_grad():
        noisy = maps + torch.randn_like(maps) * (~mask)[:, :, None, None, None]
        torch.testing.assert_close(hl.pool_context_simple(noisy, mask), hl.pool_context_simple(maps, mask))
