"""Claims about the parts: soft clamps, residual schedule, widths, MSRE geometry, LoRA deltas, LOO path."""

from __future__ import annotations

import math

import pytest
import torch

from rlan.constants import PAD
from rlan.model import ModelStages
from rlan.model.msre import grid_sizes, relative_coordinates
from rlan.model.solver import apply_lora, residual_weight, soft_clamp, swiglu_width
from tests.model.model_batches import random_batch, small_model


def test_soft_clamp_is_identity_below_threshold_and_bounded_by_limit():
    x = torch.linspace(-1000, 1000, 20001)
    y = soft_clamp(x, 50.0, 100.0)
    inside = x.abs() <= 50
    assert torch.equal(y[inside], x[inside])
    assert y.abs().max() <= 100.0 and y.abs().max() > 99.9
    assert (y.diff() >= 0).all()  # monotone, so argmax is unchanged by the clamp


def test_residual_schedule_matches_the_reference():
    rhos = [residual_weight(t) for t in range(1, 9)]
    assert rhos == pytest.approx([0.3, 0.3, 0.25, 0.2, 0.15, 0.1, 0.1, 0.1], abs=1e-12)


def test_swiglu_width_rounds_two_thirds_of_2d_up_to_the_multiple():
    assert swiglu_width(256, 64) == 384
    assert swiglu_width(128, 64) == 192
    assert swiglu_width(32, 8) == 48


def test_apply_lora_is_y_plus_y_times_delta_per_pixel():
    g = torch.Generator().manual_seed(0)
    y, delta = torch.randn(2, 4, 3, 5, generator=g), torch.randn(2, 4, 4, generator=g)
    expected = y + torch.einsum("bdhw,bde->behw", y, delta)
    torch.testing.assert_close(apply_lora(y, delta), expected)
    assert apply_lora(y, None) is y


def test_grid_sizes_come_from_the_non_pad_cells():
    query = torch.full((2, 9, 9), PAD)
    query[0, :3, :7] = 0
    query[1, :9, :2] = 5
    assert grid_sizes(query).tolist() == [[3.0, 7.0], [9.0, 2.0]]


def test_relative_coordinates_are_zero_offset_at_the_centroid():
    centroids = torch.tensor([[[0.5, 0.25]]])  # pixel (4, 2) on a 9 x 9 canvas
    coords = relative_coordinates(centroids, torch.tensor([[9.0, 9.0]]), 9, 9)
    assert coords.shape == (1, 1, 9, 9, 6)
    assert coords[0, 0, 4, 2, :4].abs().max() == 0.0
    torch.testing.assert_close(coords[0, 0, 8, 2, 0], torch.tensor(4 / 30))
    torch.testing.assert_close(coords[0, 0, 4, 8, 3], torch.tensor(6 / 9))
    assert coords[..., 5].min() >= 0 and coords[..., 5].max() <= 1


def test_lora_deltas_are_norm_clamped_and_regularised_on_the_raw_norm():
    model = small_model()
    hl = model.hyper_lora
    context = torch.randn(3, 32)
    small = hl.compute_deltas(context, delta_scale=1.0)
    big = hl.compute_deltas(context, delta_scale=1e4)
    norms = torch.stack([torch.linalg.matrix_norm(d) for d in (big.gru_reset, big.output_head)])
    torch.testing.assert_close(norms, torch.full_like(norms, hl.max_norm))
    assert math.isclose(big.reg_loss.item(), 1e4 * small.reg_loss.item(), rel_tol=1e-4)
    assert big.reg_loss.item() > hl.reg_weight * 4 * hl.max_norm
    assert small.norm.item() < hl.max_norm and math.isclose(big.norm.item(), hl.max_norm, rel_tol=1e-5)


def test_zero_delta_scale_gives_the_same_output_as_no_hyperlora():
    model = small_model().eval()
    batch = random_batch(2, 2, 6)
    with torch.no_grad():
        zero = model(*batch, stages=ModelStages(delta_scale=0.0))
        off = model(*batch, stages=ModelStages(hyperlora=False))
    assert zero.lora.norm.item() == 0.0
    torch.testing.assert_close(zero.logits, off.logits, atol=1e-6, rtol=0)


def test_forward_with_lora_holding_a_pair_out_equals_forward_without_that_pair():
    model = small_model().eval()
    inputs, outputs, mask, query = random_batch(2, 3, 7, seed=4)
    with torch.no_grad():
        maps = model.encode_support(inputs, outputs, mask)
        held_out = mask.clone()
        held_out[:, 0] = False  # LOO: predict with pairs 1 and 2 only
        lora = model.hyper_lora(maps, held_out, delta_scale=1.0)
        loo = model.forward_with_lora(query, maps, held_out, lora, ModelStages())
        direct = model(inputs[:, 1:], outputs[:, 1:], mask[:, 1:], query)
    torch.testing.assert_close(loo.logits, direct.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(loo.lora.gru_update, direct.lora.gru_update, atol=1e-6, rtol=0)
