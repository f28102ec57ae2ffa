"""Fix 4's consumer: AugmentationEquivarianceLoss on the LoRA deltas of augmented vs original support.

With 'd4' pooling the context is invariant (maps: pool_context; grids: the mean over the grids' D4 orbit),
so the loss vanishes, as the original's did; with 'simple' (fix 4) it sees orientation and is non-zero.
"""

import pytest
import torch

from rlan.losses.meta import AugmentationEquivarianceLoss
from rlan.model import ModelStages

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


def test_pooling_defaults_to_the_model_config(model, batch):
    configured = AugmentationEquivarianceLoss(2, augment="maps")(model, batch, STAGES, generator())[0]
    simple = AugmentationEquivarianceLoss(2, pooling="simple", augment="maps")(
        model, batch, STAGES, generator()
    )[0]
    assert model.config.hyperlora_pooling == "simple" and configured.item() == simple.item()
    with pytest.raises(ValueError):
        AugmentationEquivarianceLoss(2, pooling="mean")(model, batch, STAGES, generator())
