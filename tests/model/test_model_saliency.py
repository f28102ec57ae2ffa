"""The saliency controller: stop logits, clues_used, attention normalisation, centroids, confidences."""

from __future__ import annotations

import torch

from rlan.config import ModelConfig
from rlan.constants import PAD
from rlan.model import RLAN, ModelStages
from tests.model.model_batches import random_batch, small_model


def padded_query_batch():
    inputs, outputs, mask, query = random_batch(3, 2, 12, seed=2)
    query[0, 5:, :] = PAD  # a 5 x 12 grid
    query[1, :, 3:] = PAD  # a 12 x 3 grid
    query[2, 1:, :], query[2, :, 1:] = PAD, PAD  # 1 x 1
    return inputs, outputs, mask, query


def test_stop_logits_are_raw_by_default_and_squashed_into_six_on_request():
    raw_model = small_model()
    squash_model = small_model(stop_logit_squash=True)
    for m in (raw_model, squash_model):
        with torch.no_grad():
            m.dsc.stop_head.out.bias.fill_(20.0)  # push raw logits far beyond the squash range
    batch = random_batch(2, 2, 6)
    raw = raw_model.eval()(*batch).stop_logits
    squashed = squash_model.eval()(*batch).stop_logits
    assert raw.min() > 6.0
    assert squashed.abs().max() < 6.0
    torch.testing.assert_close(squashed, 6.0 * torch.tanh(raw / 6.0), atol=1e-6, rtol=0)


def test_squash_passes_gradient_straight_through_when_saturated_in_training():
    model = small_model(stop_logit_squash=True)
    with torch.no_grad():
        model.dsc.stop_head.out.bias.fill_(20.0)
    out = model(*random_batch(2, 2, 6))
    out.stop_logits.sum().backward()
    # d(stop)/d(bias) = 1 per logit with the straight-through estimator; tanh alone would give ~0.01
    assert model.dsc.stop_head.out.bias.grad.item() == out.stop_logits.numel()


def test_clues_used_is_exactly_the_sum_of_one_minus_sigmoid_stop():
    out = small_model()(*random_batch(4, 2, 7))
    assert torch.equal(out.clues_used, (1.0 - torch.sigmoid(out.stop_logits)).sum(1))
    assert (out.clues_used >= 0).all() and (out.clues_used <= 3).all()


def test_attention_sums_to_one_over_valid_pixels_and_is_zero_on_pad():
    inputs, outputs, mask, query = padded_query_batch()
    out = small_model()(inputs, outputs, mask, query)
    valid = (query != PAD)[:, None].expand_as(out.attention_maps)
    sums = (out.attention_maps * valid).sum((2, 3))
    torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-5, rtol=0)
    assert out.attention_maps[~valid].abs().max().item() == 0.0
    torch.testing.assert_close(out.attention_maps[2, :, 0, 0], torch.ones(3))


def test_centroids_lie_in_the_unit_square_and_inside_the_grid():
    inputs, outputs, mask, query = padded_query_batch()
    out = small_model()(inputs, outputs, mask, query)
    assert (out.centroids >= 0).all() and (out.centroids <= 1).all()
    assert (out.centroids[0, :, 0] <= 4 / 11 + 1e-6).all()  # rows 0-4 of a 12-row canvas
    assert (out.centroids[1, :, 1] <= 2 / 11 + 1e-6).all()  # cols 0-2
    assert out.centroids[2].abs().max() == 0.0


def test_confidences_are_one_minus_normalised_entropy():
    inputs, outputs, mask, query = padded_query_batch()
    out = small_model()(inputs, outputs, mask, query)
    a = out.attention_maps.flatten(2)
    n_valid = (query != PAD).flatten(1).sum(1).float().clamp_min(2)
    entropy = -(a * a.clamp(1e-6, 1).log()).sum(-1)
    torch.testing.assert_close(out.confidences, 1 - entropy / n_valid.log()[:, None], atol=1e-6, rtol=0)
    assert torch.allclose(out.confidences[2], torch.ones(3))  # one valid pixel: fully confident


def test_lower_temperature_sharpens_attention():
    model = small_model().eval()
    batch = random_batch(2, 2, 10)
    with torch.no_grad():
        hot = model(*batch, stages=ModelStages(temperature=2.0))
        cold = model(*batch, stages=ModelStages(temperature=0.2))
    assert cold.attention_maps.amax((2, 3)).mean() > hot.attention_maps.amax((2, 3)).mean()


def test_forward_is_deterministic_under_manual_seed():
    batch = random_batch(2, 2, 8)
    config = ModelConfig(hidden_dim=32, max_clues=3, num_solver_steps=2)
    runs = []
    for _ in range(2):
        torch.manual_seed(11)
        runs.append(RLAN(config)(*batch))  # training mode: dropout masks come from the seed too
    assert torch.equal(runs[0].logits, runs[1].logits)
    assert torch.equal(runs[0].stop_logits, runs[1].stop_logits)
