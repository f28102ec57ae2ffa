"""Fix 1: the task losses clamp the counted logits to +-logit_clamp_max before the stablemax."""

import numpy as np
import pytest
import torch

from rlan.losses import FocalWeightedStablemaxLoss, WeightedStablemaxLoss, class_weights
from rlan.losses.stablemax import log_stablemax, stablemax
from tests.losses._reference import class_weights as reference_weights
from tests.losses._reference import per_sample_loss

LOSSES = {
    "weighted": lambda clamp: WeightedStablemaxLoss(logit_clamp_max=clamp),
    "focal": lambda clamp: FocalWeightedStablemaxLoss(logit_clamp_max=clamp, gamma=1.2),
}
GAMMA = {"weighted": 0.0, "focal": 1.2}


def make_batch(low: float, high: float, seed: int = 0, b: int = 3, side: int = 6):
    g = torch.Generator().manual_seed(seed)
    logits = low + (high - low) * torch.rand(b, 11, side, side, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 11, (b, side, side), generator=g)
    mask = torch.zeros(b, side, side, dtype=torch.bool)
    for i, s in enumerate([side, side - 2, 3][:b]):
        mask[i, :s, :s] = True
    return logits.float(), targets, mask


@pytest.mark.parametrize("name", LOSSES)
def test_what_the_clamp_changes_beyond_the_threshold(name):
    """One cell whose winning logit is pushed from 40 to 80: with the clamp at 50 the loss stops moving at
    50 and the logit gets no gradient; without it the loss keeps moving and the gradient is non-zero."""
    targets = torch.tensor([[[3]]])
    mask = torch.ones(1, 1, 1, dtype=torch.bool)

    def loss_and_grad(clamp: float, logit: float):
        x = torch.zeros(1, 11, 1, 1)
        x[0, 7, 0, 0] = logit  # a wrong class, confidently
        x.requires_grad_(True)
        loss = LOSSES[name](clamp)(x, targets, mask).sum()
        loss.backward()
        return loss.item(), x.grad[0, 7, 0, 0].item()

    at_50, _ = loss_and_grad(50.0, 50.0)
    beyond, grad_beyond = loss_and_grad(50.0, 80.0)
    below, grad_below = loss_and_grad(50.0, 40.0)
    assert beyond == pytest.approx(at_50, rel=1e-12) and grad_beyond == 0.0
    assert below < at_50 and grad_below > 0  # below the threshold the clamp changes nothing
    assert below == pytest.approx(loss_and_grad(0.0, 40.0)[0], rel=1e-12)
    free, free_grad = loss_and_grad(0.0, 80.0)
    assert free > at_50 + 0.1 and free_grad > 0


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("bounds", [(-90.0, 80.0), (-1e4, 1e4)])
def test_clamped_loss_equals_loss_on_preclamped_logits(name, bounds):
    logits, targets, mask = make_batch(*bounds, seed=1)
    clamped = LOSSES[name](50.0)(logits, targets, mask)
    on_preclamped = LOSSES[name](0.0)(logits.clamp(-50, 50), targets, mask)
    torch.testing.assert_close(clamped, on_preclamped, rtol=1e-6, atol=0)
    expected = per_sample_loss(logits.double().numpy(), targets.numpy(), mask.numpy(), GAMMA[name], clamp=50)
    np.testing.assert_allclose(clamped.double().numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("clamp", [0.0, -1.0])
def test_nonpositive_clamp_reproduces_unclamped_reference(name, clamp):
    logits, targets, mask = make_batch(-1e4, 1e4, seed=2)
    unclamped = LOSSES[name](clamp)(logits, targets, mask)
    expected = per_sample_loss(logits.double().numpy(), targets.numpy(), mask.numpy(), GAMMA[name], clamp=0)
    np.testing.assert_allclose(unclamped.double().numpy(), expected, rtol=1e-5)
    clamped = LOSSES[name](50.0)(logits, targets, mask)
    assert (unclamped - clamped).abs().max() > 1.0


def test_clamp_zeroes_gradient_beyond_the_clamp():
    logits, targets, mask = make_batch(-90.0, 80.0, seed=3)
    x = logits.clone().requires_grad_(True)
    WeightedStablemaxLoss(logit_clamp_max=50.0)(x, targets, mask).sum().backward()
    beyond = (logits.abs() > 50) & mask[:, None]
    inside = (logits.abs() < 50) & mask[:, None]
    assert beyond.any() and x.grad[beyond].abs().max() == 0
    assert x.grad[inside].abs().max() > 0


def test_stablemax_matches_its_definition():
    x = torch.tensor([[-3.0, 0.0, 2.0, -0.5]])
    s = torch.tensor([[1 / 4, 1.0, 3.0, 1 / 1.5]], dtype=torch.float64)
    torch.testing.assert_close(stablemax(x, dim=-1).double(), s / s.sum(), rtol=1e-6, atol=0)
    torch.testing.assert_close(log_stablemax(x, dim=-1, dtype=torch.float64), (s / s.sum()).log())
    assert stablemax(x, dim=-1).dtype == torch.float32


def test_cells_outside_the_mask_do_not_count():
    logits, targets, mask = make_batch(-5.0, 5.0, seed=4)
    changed_logits, changed_targets = logits.clone(), targets.clone()
    changed_logits[~mask[:, None].expand_as(logits)] = 1e6
    changed_targets[~mask] = 3
    loss = FocalWeightedStablemaxLoss()(logits, targets, mask)
    torch.testing.assert_close(loss, FocalWeightedStablemaxLoss()(changed_logits, changed_targets, mask))


def test_loss_is_a_mean_over_valid_cells_not_over_the_canvas():
    # The same 3x3 sample scores the same whether it sits in a 3x3 or a 30x30 batch canvas.
    logits, targets, mask = make_batch(-5.0, 5.0, seed=5, b=1, side=3)
    big_logits = torch.zeros(1, 11, 30, 30)
    big_logits[:, :, :3, :3] = logits
    big_targets = torch.full((1, 30, 30), 10)
    big_targets[:, :3, :3] = targets
    big_mask = torch.zeros(1, 30, 30, dtype=torch.bool)
    big_mask[:, :3, :3] = True
    loss_fn = WeightedStablemaxLoss()
    torch.testing.assert_close(loss_fn(logits, targets, mask), loss_fn(big_logits, big_targets, big_mask))
    assert loss_fn(logits, targets, torch.zeros_like(mask)).item() == 0.0


def test_absent_colours_do_not_distort_present_ones():
    # Colours 1 (8 cells) and 2 (2 cells) only: 2 is the rarest -> fg cap, 1 the most common -> 1.
    targets = torch.tensor([0] * 10 + [1] * 8 + [2] * 2 + [10] * 5)
    weights = class_weights(targets, bg_weight_cap=1.5, fg_weight_cap=6.0, outside_weight=0.5)
    assert weights[1].item() == pytest.approx(1.0)
    assert weights[2].item() == pytest.approx(6.0)
    assert weights[0].item() == 1.5 and weights[10].item() == 0.5
    np.testing.assert_allclose(weights.numpy(), reference_weights(targets.numpy(), 1.5, 6.0, 0.5), rtol=1e-6)


def test_three_present_colours_interpolate_by_inverse_frequency():
    targets = torch.tensor([3] * 8 + [4] * 4 + [5] * 2)  # raw = 14/8, 14/4, 14/2
    weights = class_weights(targets, 1.0, 6.0, 1.0)
    assert weights[3].item() == pytest.approx(1.0)
    assert weights[4].item() == pytest.approx(1 + 5 * (3.5 - 1.75) / (7 - 1.75))
    assert weights[5].item() == pytest.approx(6.0)


def test_single_or_equally_common_colours_get_the_midpoint():
    assert class_weights(torch.tensor([0, 0, 7]), 1.0, 6.0, 1.0)[7].item() == pytest.approx(3.5)
    weights = class_weights(torch.tensor([0, 1, 1, 9, 9]), 1.0, 6.0, 1.0)
    assert weights[1].item() == weights[9].item() == pytest.approx(3.5)
    assert torch.isfinite(class_weights(torch.tensor([0, 10]), 1.0, 6.0, 1.0)).all()
