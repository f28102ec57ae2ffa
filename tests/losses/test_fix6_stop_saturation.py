"""Fix 6: weight * mean relu(|stop| - threshold) is in the sparsity total, hence in the gradient."""

import pytest
import torch

from rlan.losses import SparsityRegularization

STOP = torch.tensor([[7.0, -6.5, 1.0, 4.9], [-9.0, 0.0, 5.5, -2.0]])


def run(saturation_weight: float, stop: torch.Tensor = STOP, threshold: float = 5.0, **kwargs):
    x = stop.clone().requires_grad_(True)
    attention = torch.full((*stop.shape, 3, 3), 1 / 9)
    module = SparsityRegularization(
        saturation_weight=saturation_weight, saturation_threshold=threshold, lambda_sparsity=0.5, **kwargs
    )
    return x, module(x, attention)


def test_saturation_term_equals_hand_computation():
    _, terms = run(0.5)
    excess = [2.0, 1.5, 0.0, 0.0, 4.0, 0.0, 0.5, 0.0]
    assert terms["stop_saturation_loss"].item() == pytest.approx(0.5 * sum(excess) / 8, rel=1e-6)


def test_saturation_gradient_points_inward_and_is_zero_within():
    x, terms = run(0.5)
    terms["stop_saturation_loss"].backward()
    beyond = STOP.abs() > 5.0
    # A descent step (-grad) moves every saturated logit toward 0 by weight / (B*K) per unit.
    torch.testing.assert_close(-x.grad[beyond], -torch.sign(STOP[beyond]) * 0.5 / 8)
    assert (x.grad[~beyond] == 0).all()


def test_saturation_term_reaches_gradient_of_total():
    grads = []
    for weight in (0.0, 0.5, 2.0):
        x, terms = run(weight)
        terms["total"].backward()
        grads.append(x.grad)
    beyond = STOP.abs() > 5.0
    diff = grads[2] - grads[1]
    torch.testing.assert_close(diff[beyond], torch.sign(STOP[beyond]) * 1.5 / 8)
    assert (diff[~beyond].abs() < 1e-7).all()
    assert (grads[1] - grads[0]).abs().max() > 1e-3


def test_no_saturation_below_threshold():
    x, terms = run(10.0, stop=STOP.clamp(-4.9, 4.9))
    assert terms["stop_saturation_loss"].item() == 0.0
