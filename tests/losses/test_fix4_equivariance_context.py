"""Fix 4's consumer: AugmentationEquivarianceLoss on the LoRA deltas of augmented vs original support.

With 'd4' pooling the context is invariant (maps: pool_context; grids: the mean over the grids' D4 orbit),
so the loss vanishes, as the original's did; with 'simple' (fix 4) it sees orientation and is non-zero.
"""

import pytest
import torch

from rlan.losses.meta import AugmentationEquivarianceLoss
from rlan.model import ModelStages
from tests.model.model_batches import small_model

STAGES = ModelStages(delta_scale=1.0)


def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_d4_pooling_makes_map_level_loss_vanish(model, batch):
    loss, info = AugmentationEquivarianceLoss(7, pooling="d4", augment="maps")(
        model, batch, STAGES, generator()
    )
    assert abs(loss.item()) < 1e-6
    assert info["equiv_loss"] == loss.item()


def test_simple_pooling_sees_orientation(model, batch):
    loss, _ = AugmentationEquivarianceLoss(7, pooling="simple", augment="maps")(
        model, batch, STAGES, generator()
    )
    assert loss.item() > 1e-4
    loss.backward()
    assert model.hyper_lora.pool_position.grad.abs().max() > 0
    assert model.context_encoder.position.grad is None  # map-level views: the encoder is not involved


def test_grid_level_loss_is_positive_with_simple_pooling_and_trains_the_encoder(model, batch):
    loss, _ = AugmentationEquivarianceLoss(2, pooling="simple")(model, batch, STAGES, generator())
    assert loss.item() > 1e-4
    loss.backward()
    assert model.context_encoder.position.grad.abs().max() > 0


def test_grid_level_loss_vanishes_with_d4_pooling(model, batch):
    loss, _ = AugmentationEquivarianceLoss(3, pooling="d4")(model, batch, STAGES, generator())
    assert abs(loss.item()) < 1e-6


def test_pooling_is_the_losses_own_setting_not_the_models(model, batch):
    """Fix 4 switches the loss's pooling only; the model's forward pooling is read by nobody here."""
    default = AugmentationEquivarianceLoss(2, augment="maps")
    assert default.pooling == "simple"
    simple = default(model, batch, STAGES, generator())[0]
    model.config = model.config.model_copy(update={"hyperlora_pooling": "d4"})
    assert default(model, batch, STAGES, generator())[0].item() == simple.item()
    with pytest.raises(ValueError):
        AugmentationEquivarianceLoss(2, pooling="mean")


def test_simple_pooling_loss_falls_when_trained_toward_invariance(batch):
    """The loss has a gradient that leads somewhere: trained on alone, it falls well below its start."""
    model = small_model(seed=3).train()
    loss_fn = AugmentationEquivarianceLoss(2, pooling="simple")
    params = [p for name, p in model.named_parameters() if name.startswith(("context_encoder", "hyper_lora"))]
    optimizer = torch.optim.Adam(params, lr=3e-3)

    def value(seed: int) -> float:
        with torch.no_grad():
            return loss_fn(model, batch, STAGES, torch.Generator().manual_seed(seed))[0].item()

    before = sum(value(s) for s in range(4)) / 4
    for step in range(60):
        optimizer.zero_grad()
        loss_fn(model, batch, STAGES, torch.Generator().manual_seed(100 + step))[0].backward()
        optimizer.step()
    after = sum(value(s) for s in range(4)) / 4
    assert before > 1e-3 and after < 0.5 * before, (before, after)
