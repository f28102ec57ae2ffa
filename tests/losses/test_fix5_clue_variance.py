"""Fix 5: relu(target - std_b(clues_used)) * weight is in the sparsity total, hence in the gradient."""

import pytest
import torch

from rlan.losses import SparsityRegularization


def regulariser(variance_weight: float, target: float = 0.5) -> SparsityRegularization:
    return SparsityRegularization(
        variance_weight=variance_weight, target_variance=target, lambda_sparsity=0.5
    )


def inputs(stop_logits: torch.Tensor):
    b, k = stop_logits.shape
    attention = torch.softmax(torch.randn(b, k, 5, 5, generator=torch.Generator().manual_seed(0)), dim=-1)
    return stop_logits.clone().requires_grad_(True), attention.view(b, k, 5, 5)


def hand_std(stop_logits: torch.Tensor) -> float:
    clues = [sum(1.0 - 1.0 / (1.0 + pow(2.718281828459045, -x)) for x in row) for row in stop_logits.tolist()]
    mean = sum(clues) / len(clues)
    return (sum((c - mean) ** 2 for c in clues) / (len(clues) - 1)) ** 0.5


def test_variance_term_equals_hand_computation():
    stop = torch.tensor([[2.0, -1.0, 0.5], [1.8, -0.9, 0.4], [2.2, -1.2, 0.6], [1.9, -1.0, 0.5]])
    std = hand_std(stop)
    assert std < 0.5
    x, attention = inputs(stop)
    terms = regulariser(3.0)(x, attention)
    assert terms["clue_variance_loss"].item() == pytest.approx(3.0 * (0.5 - std), rel=1e-5)
    expected_total = (
        0.5 * terms["sparsity_loss"] + terms["clue_variance_loss"] + terms["stop_saturation_loss"]
    )
    torch.testing.assert_close(terms["total"], expected_total)


def gradient(variance_weight: float, stop: torch.Tensor) -> torch.Tensor:
    x, attention = inputs(stop)
    regulariser(variance_weight)(x, attention)["total"].backward()
    return x.grad


def test_variance_term_reaches_gradient():
    stop = torch.tensor([[2.0, -1.0, 0.5], [1.8, -0.9, 0.4], [2.2, -1.2, 0.6]])
    without, with_term = gradient(0.0, stop), gradient(1.0, stop)
    assert (with_term - without).abs().max() > 1e-3
    # d/dx of w * (t - std) is -w * d std/dx: the difference is exactly the std's gradient, negated.
    x = stop.clone().requires_grad_(True)
    (1.0 - torch.sigmoid(x)).sum(1).std().backward()
    torch.testing.assert_close(with_term - without, -x.grad, rtol=1e-4, atol=1e-7)


def test_no_effect_when_std_reaches_target():
    stop = torch.tensor([[4.0, 4.0, 4.0], [-4.0, -4.0, -4.0], [0.0, 0.0, 0.0]])  # std of clues ~ 1.45
    assert hand_std(stop) >= 0.5
    x, attention = inputs(stop)
    assert regulariser(5.0)(x, attention)["clue_variance_loss"].item() == 0.0
    torch.testing.assert_close(gradient(0.0, stop), gradient(5.0, stop), rtol=0, atol=0)


def test_batch_of_one_is_finite_and_zero():
    x, attention = inputs(torch.tensor([[0.3, -2.0, 1.0]]))
    terms = regulariser(1.0)(x, attention)
    assert terms["clue_variance_loss"].item() == 0.0
    terms["total"].backward()
    assert torch.isfinite(x.grad).all()


def test_identical_samples_give_finite_gradient():
    x, attention = inputs(torch.zeros(4, 3))
    terms = regulariser(1.0)(x, attention)
    assert terms["clue_variance_loss"].item() == pytest.approx(0.5)
    terms["total"].backward()
    assert torch.isfinite(x.grad).all()
