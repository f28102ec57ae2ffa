"""Fix 3: OutputEquivarianceLoss, KL(consensus of D4 views || prediction), masked to target_mask."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from rlan.data.constants import NUM_CLASSES, PAD
from rlan.losses.d4 import apply_d4, invert_d4, permute_colors, random_color_permutation, sample_d4
from rlan.losses.meta import OutputEquivarianceLoss
from rlan.model import ModelStages, run_on_batch

STAGES = ModelStages()


class PerPixelModel(nn.Module):
    """Logits from the query cell's own colour only: commutes with every D4 transform."""

    def __init__(self, color_equivariant: bool = False):
        super().__init__()
        torch.manual_seed(1)
        self.scale = nn.Parameter(torch.tensor(3.0))
        self.mix = None if color_equivariant else nn.Conv2d(NUM_CLASSES, NUM_CLASSES, 1)

    def forward(self, support_inputs, support_outputs, support_mask, query_inputs, stages=STAGES):
        one_hot = nn.functional.one_hot(query_inputs, NUM_CLASSES).permute(0, 3, 1, 2).float()
        logits = self.scale * one_hot if self.mix is None else self.mix(one_hot)
        return SimpleNamespace(logits=logits)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("num_augmentations", [1, 2, 7])
def test_equivariant_model_scores_zero(batch, num_augmentations):
    loss, info = OutputEquivarianceLoss(num_augmentations)(
        PerPixelModel(), batch, STAGES, generator=generator()
    )
    assert abs(loss.item()) < 1e-6 and info["output_equiv_loss"] == loss.item()


def test_colour_permutation_views(batch):
    colour_equivariant = PerPixelModel(color_equivariant=True)
    loss, _ = OutputEquivarianceLoss(3, color_permutation=True)(
        colour_equivariant, batch, STAGES, None, generator()
    )
    assert abs(loss.item()) < 1e-6
    # A 1x1 conv over colours is D4- but not colour-equivariant: only the colour views see it.
    mixer = PerPixelModel()
    assert abs(OutputEquivarianceLoss(3)(mixer, batch, STAGES, None, generator())[0].item()) < 1e-6
    assert (
        OutputEquivarianceLoss(3, color_permutation=True)(mixer, batch, STAGES, None, generator())[0] > 1e-3
    )


def test_real_model_scores_positive_and_gradient_reaches_parameters(model, batch):
    loss, _ = OutputEquivarianceLoss(2)(model, batch, STAGES, generator=generator())
    assert loss.item() > 1e-3
    loss.backward()
    head = model.solver.head[-1].weight.grad
    assert head is not None and head.abs().max() > 0
    assert model.context_encoder.position.grad.abs().max() > 0  # the original forward's whole graph


def test_loss_is_the_masked_mean_kl(model, batch):
    loss_fn = OutputEquivarianceLoss(2)
    with torch.no_grad():
        logits = run_on_batch(model, batch, STAGES).logits
    loss, _ = loss_fn(model, batch, STAGES, original_logits=logits, generator=generator(5))
    q = loss_fn.consensus(model, batch, STAGES, generator(5))
    kl = (q * (q.log() - torch.log_softmax(logits, dim=1))).sum(1)
    mask = batch["target_mask"]
    per_sample = [kl[b][mask[b]].mean() for b in range(mask.shape[0])]
    torch.testing.assert_close(loss, torch.stack(per_sample).mean(), rtol=1e-5, atol=1e-7)


def test_cells_outside_target_mask_do_not_count(model, batch):
    with torch.no_grad():
        logits = run_on_batch(model, batch, STAGES).logits
    outside = ~batch["target_mask"]
    assert outside.any()
    changed_logits = logits.clone()
    changed_logits[outside[:, None].expand_as(logits)] = 1e4
    changed_batch = dict(batch, query_targets=torch.where(outside, 3, batch["query_targets"]))
    loss_fn = OutputEquivarianceLoss(2)
    loss, _ = loss_fn(model, batch, STAGES, original_logits=logits, generator=generator(3))
    changed, _ = loss_fn(model, changed_batch, STAGES, original_logits=changed_logits, generator=generator(3))
    assert changed.item() == loss.item()
    # ...while the same change inside the mask does move it.
    inside_logits = logits.clone()
    inside_logits[batch["target_mask"][:, None].expand_as(logits)] = 1e4
    assert loss_fn(model, batch, STAGES, inside_logits, generator(3))[0].item() != loss.item()


def test_d4_helpers_invert_and_sample_distinct():
    x = torch.arange(2 * 5 * 5).view(2, 5, 5)
    for t in range(8):
        assert torch.equal(invert_d4(apply_d4(x, t), t), x)
    assert len({tuple(apply_d4(x, t).flatten().tolist()) for t in range(8)}) == 8
    drawn = sample_d4(7, generator(0))
    assert sorted(drawn) == list(range(1, 8))
    perm = random_color_permutation(generator(0))
    assert perm[0] == 0 and perm[PAD] == PAD and sorted(perm.tolist()) == list(range(11))
    assert torch.equal(permute_colors(torch.tensor([0, 3, PAD]), perm), perm[[0, 3, PAD]])
    with pytest.raises(ValueError):
        sample_d4(8)
