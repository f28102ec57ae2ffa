"""Backward reaches every part that ran, staged-off parts get nothing, and extreme inputs stay finite."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlan.constants import NUM_CLASSES, PAD
from rlan.model import ModelStages
from tests.model.model_batches import random_batch, small_model


def task_loss(out) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    b, _, h, w = out.logits.shape
    target = torch.randint(0, NUM_CLASSES, (b, h, w), generator=g)
    return sum(F.cross_entropy(x, target) for x in out.all_logits) + out.lora.reg_loss


def test_every_participating_parameter_gets_a_finite_gradient():
    model = small_model()
    inputs, outputs, mask, query = random_batch(2, 3, 6)
    mask[1, 2] = False
    task_loss(model(inputs, outputs, mask, query, ModelStages())).backward()
    for name, p in model.named_parameters():
        if name.startswith("film."):  # cross-attention replaces FiLM, so FiLM did not take part
            assert p.grad is None, name
            continue
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
    nonzero = sum(int(p.grad.abs().sum() > 0) for p in model.parameters() if p.grad is not None)
    assert nonzero == sum(1 for n, _ in model.named_parameters() if not n.startswith("film."))


def test_staged_off_hyperlora_returns_no_lora_and_gets_no_gradient():
    model = small_model()
    out = model(*random_batch(2, 2, 5), ModelStages(hyperlora=False))
    assert out.lora is None
    out.logits.square().mean().backward()
    assert all(p.grad is None for p in model.hyper_lora.parameters())
    assert model.solver.cell.gates_z.weight.grad is not None


def test_staged_off_context_modules_do_not_run():
    model = small_model()
    stages = ModelStages(solver_context=False, cross_attention=False, hyperlora=False)
    out = model(*random_batch(2, 2, 5), stages)
    out.logits.square().mean().backward()
    for part in (model.cross_injector, model.solver.context_attention, model.hyper_lora):
        assert all(p.grad is None for p in part.parameters())
    assert all(p.grad is not None for p in model.film.parameters())


def test_config_switches_remove_modules():
    model = small_model(use_hyperlora=False, use_cross_attention_context=False, use_solver_context=False)
    assert (
        model.hyper_lora is None and model.cross_injector is None and model.solver.context_attention is None
    )
    out = model(*random_batch(1, 2, 4))  # default stages ask for them; the config wins
    assert out.lora is None and torch.isfinite(out.logits).all()


def test_extreme_inputs_stay_finite_forward_and_backward():
    model = small_model()
    inputs, outputs, mask, query = random_batch(3, 2, 30, seed=5)
    query[0] = PAD
    query[0, 0, 0] = 4  # one real cell on a 30 x 30 canvas
    query[1] = 0  # all background
    inputs[2, 1], outputs[2, 1] = PAD, PAD  # a real pair of all-PAD grids
    for stages in (ModelStages(temperature=0.05), ModelStages(temperature=5.0, delta_scale=100.0)):
        model.zero_grad()
        out = model(inputs, outputs, mask, query, stages)
        for x in (out.logits, out.attention_maps, out.centroids, out.stop_logits, out.confidences):
            assert torch.isfinite(x).all()
        assert out.logits.abs().max() < model.config.output_soft_clamp_max
        assert out.attention_maps[0, :, 0, 0].sub(1).abs().max() < 1e-6  # the only valid pixel
        task_loss(out).backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
