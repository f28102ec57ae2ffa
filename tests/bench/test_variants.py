"""bench --variants: each variant turns one optimisation off and leaves values and gradients unchanged."""

from __future__ import annotations

import pytest
import torch

import rlan.model.fused as fused
from bench.variants import VARIANTS, apply
from rlan.model import ModelStages
from tests.model.model_batches import random_batch, small_model


def _loss_and_grads(model, batch):
    torch.manual_seed(3)
    out = model(*batch, ModelStages(delta_scale=0.5))
    loss = out.logits.square().mean() + out.lora.reg_loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return loss.detach(), grads


@pytest.mark.parametrize("name", [n for n in VARIANTS if n != "all optimisations"])
def test_a_variant_keeps_the_loss_and_the_gradients(name, monkeypatch):
    model = small_model(dropout=0.0)  # no random masks, so every variant must agree exactly
    batch = random_batch(2, 3, 26)  # a large canvas, where the recomputation applies
    batch[2][1, 2] = False  # one padded support pair
    loss, grads = _loss_and_grads(model, batch)
    apply(name, monkeypatch.setattr)
    changed_loss, changed_grads = _loss_and_grads(model, batch)
    torch.testing.assert_close(changed_loss, loss, atol=1e-5, rtol=1e-5)
    assert changed_grads.keys() == grads.keys()
    for key in grads:
        torch.testing.assert_close(changed_grads[key], grads[key], atol=1e-5, rtol=1e-4, msg=key)


def test_apply_reaches_the_named_attribute_and_monkeypatch_undoes_it():
    original = fused._plain
    with pytest.MonkeyPatch.context() as patch:
        apply("autograd's backwards (no fused ops)", patch.setattr)
        assert fused._plain is not original and fused._plain(torch.zeros(1))
    assert fused._plain is original


def test_interleaved_toggle_turns_a_variant_on_and_restores_the_original():
    from bench.interleaved import Toggle
    from rlan.model.solver import RecursiveSolver

    toggle = Toggle("every step's logits")
    assert RecursiveSolver.all_step_logits is False
    toggle.set(True)
    assert RecursiveSolver.all_step_logits is True
    toggle.set(False)
    assert RecursiveSolver.all_step_logits is False
