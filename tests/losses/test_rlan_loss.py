"""RLANLoss on a real forward: every component present and finite, the total their documented sum; LOO."""

import pytest
import torch

from rlan.config import TrainingConfig
from rlan.losses import FocalWeightedStablemaxLoss, RLANLoss, WeightedStablemaxLoss
from rlan.losses.meta import loo_loss
from rlan.model import ModelStages, run_on_batch

STAGES = ModelStages(delta_scale=0.05)
KEYS = {
    "total",
    "task_loss",
    "entropy_loss",
    "min_clue_loss",
    "ponder_loss",
    "entropy_ponder_loss",
    "sparsity_loss",
    "clue_variance_loss",
    "stop_saturation_loss",
    "lora_reg_loss",
}  # the loss terms only: clue counts and stop ranges are epoch statistics (clues/*, stop/*)


def forward(model, batch, stages=STAGES):
    return run_on_batch(model, batch, stages)


@pytest.mark.parametrize("hyperlora", [True, False])
def test_components_present_finite_and_summing_to_total(model, batch, hyperlora):
    config = TrainingConfig(
        clue_variance_weight=1.0, stop_saturation_weight=0.5, stop_saturation_threshold=0.01
    )
    output = forward(model.train(), batch, ModelStages(hyperlora=hyperlora, delta_scale=0.05))
    losses = RLANLoss(config)(output, batch)
    assert set(losses) == KEYS
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    expected = (
        losses["task_loss"]
        + config.lambda_entropy * losses["entropy_loss"]
        + config.lambda_sparsity * losses["sparsity_loss"]
        + losses["clue_variance_loss"]
        + losses["stop_saturation_loss"]
        + losses["lora_reg_loss"]
    )
    torch.testing.assert_close(losses["total"], expected, rtol=0, atol=1e-6)
    parts = losses["min_clue_loss"] + losses["ponder_loss"] + losses["entropy_ponder_loss"]
    torch.testing.assert_close(losses["sparsity_loss"], parts)
    assert losses["stop_saturation_loss"] > 0 and losses["clue_variance_loss"] > 0
    assert (losses["lora_reg_loss"] > 0) == hyperlora
    (d_stop,) = torch.autograd.grad(losses["total"], output.stop_logits)
    assert torch.isfinite(d_stop).all() and d_stop.abs().max() > 0


def test_task_loss_is_the_batch_mean_of_the_configured_loss(model, batch):
    output = forward(model, batch)
    for mode, cls in [
        ("focal_weighted", FocalWeightedStablemaxLoss),
        ("weighted_stablemax", WeightedStablemaxLoss),
    ]:
        config = TrainingConfig(loss_mode=mode)
        task = RLANLoss(config)(output, batch)["task_loss"]
        assert isinstance(RLANLoss(config).task_loss, cls)
        per_sample = RLANLoss(config).task_loss(output.logits, batch["query_targets"], batch["target_mask"])
        torch.testing.assert_close(task, per_sample.mean())


def test_loo_loss_runs_and_backpropagates(model, batch):
    model.train()
    loss, info = loo_loss(model, batch, STAGES, max_loo_pairs=4)
    # samples a (3 pairs) and b (2 pairs) give 5 holdouts; sample c has one pair only
    assert info["loo_num_holdouts"] == 5
    assert loss.item() == pytest.approx(info["loo_loss"]) and loss.item() > 0
    assert 0.0 <= info["loo_accuracy"] <= 1.0
    loss.backward()
    assert model.hyper_lora.factor_a["gru_reset"][0].weight.grad.abs().max() > 0
    assert model.solver.head[-1].weight.grad.abs().max() > 0
    assert model.context_encoder.position.grad is None  # detach_support: as the original


def test_loo_respects_max_pairs_and_can_train_the_encoder(model, batch):
    loss, info = loo_loss(model, batch, STAGES, max_loo_pairs=1, detach_support=False)
    assert info["loo_num_holdouts"] == 2
    loss.backward()
    assert model.context_encoder.position.grad.abs().max() > 0


def test_loo_without_qualifying_sample_is_a_grad_safe_zero(model, batch):
    single = dict(batch, support_mask=batch["support_mask"] & (torch.arange(3) == 0))
    loss, info = loo_loss(model, single, STAGES)
    assert loss.item() == 0.0 and info["loo_num_holdouts"] == 0
    loss.backward()


@pytest.mark.parametrize(
    "term, weight",
    [("clue_variance_loss", "clue_variance_weight"), ("stop_saturation_loss", "stop_saturation_weight")],
)
def test_fix5_and_fix6_terms_are_in_the_training_total_with_their_gradient(model, batch, term, weight):
    """Fails if the term is dropped from RLANLoss's total, or reaches it detached (the original's bug)."""
    output = forward(model.train(), batch)
    # A high target std and a tiny threshold, so both hinges are active on this batch.
    off = TrainingConfig(clue_target_variance=5.0, stop_saturation_threshold=0.01)
    on = off.model_copy(update={weight: 2.0})
    without, with_term = RLANLoss(off)(output, batch), RLANLoss(on)(output, batch)
    assert with_term[term] > 0 and without[term] == 0
    torch.testing.assert_close(with_term["total"] - without["total"], with_term[term])

    def grad(value):
        return torch.autograd.grad(value, output.stop_logits, retain_graph=True)[0]

    of_term = grad(with_term[term])
    assert of_term.abs().max() > 0
    torch.testing.assert_close(
        grad(with_term["total"]) - grad(without["total"]), of_term, rtol=1e-4, atol=1e-8
    )
