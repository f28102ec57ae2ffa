"""The performance rewrites compute what the plain expressions computed (values and gradients)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import rlan.model.fused as fused_module
from rlan.model import ModelStages
from rlan.model.attention import attend, project_keys
from rlan.model.dropout import dropout, keep_mask
from rlan.model.fused import dropout_attention, group_norm_gelu, soft_clamp, swiglu, swiglu_down_tanh
from rlan.model.solver import apply_lora
from tests.model.model_batches import random_batch, small_model

CHANNELS = [torch.contiguous_format, torch.channels_last]


def test_dropout_mask_rate_and_scale_keep_the_expectation():
    torch.manual_seed(0)
    keep, scale = keep_mask((1000, 1000), 0.1, torch.device("cpu"))
    cut = round(0.1 * 65536) / 65536
    assert keep.dtype == torch.uint8 and set(keep.unique().tolist()) == {0, 1}
    assert abs(1 - keep.float().mean().item() - cut) < 2e-3 and scale == pytest.approx(1 / (1 - cut))
    x = torch.ones(1000, 1000)
    assert dropout(x, 0.1, True).mean().item() == pytest.approx(1.0, abs=5e-3)
    assert dropout(x, 0.1, False) is x
    torch.manual_seed(3)
    first = dropout(x, 0.3, True)
    torch.manual_seed(3)
    assert torch.equal(first, dropout(x, 0.3, True))


@pytest.mark.parametrize("memory_format", CHANNELS)
def test_dropout_is_the_masked_and_scaled_input_with_its_gradient(memory_format):
    x = torch.randn(2, 3, 4, 5, dtype=torch.double).contiguous(memory_format=memory_format).requires_grad_()
    torch.manual_seed(7)
    keep, scale = keep_mask(x.shape, 0.25, x.device)

    def fn(x):
        torch.manual_seed(7)
        return dropout(x, 0.25, True)

    torch.testing.assert_close(fn(x), x.masked_fill(keep == 0, 0.0) * scale)
    assert fn(x).is_contiguous(memory_format=memory_format)
    assert torch.autograd.gradcheck(fn, (x,))


def test_attend_equals_multihead_attention_with_key_padding():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4, dropout=0.1, batch_first=True).eval()
    query, tokens = torch.randn(5, 7, 32), torch.randn(5, 12, 32)
    padding = torch.zeros(5, 12, dtype=torch.bool)
    padding[1, 8:] = True
    padding[2, 4:8] = True  # a hole (a held-out pair)
    padding[3, 4:] = True
    expected = mha(query, tokens, tokens, key_padding_mask=padding, need_weights=False)[0]
    got = attend(mha, query, project_keys(mha, tokens, padding))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_dropout_attention_matches_the_plain_expression_and_its_gradient():
    q, k, v = (torch.randn(2, 3, n, 4, dtype=torch.double, requires_grad=True) for n in (5, 7, 7))

    def fn(q, k, v):
        torch.manual_seed(5)
        return dropout_attention(q, k, v, 0.3)

    torch.manual_seed(5)
    keep, scale = keep_mask((2, 3, 5, 7), 0.3, torch.device("cpu"))
    weights = torch.softmax(q @ k.transpose(-1, -2) / 2.0, -1)
    torch.testing.assert_close(fn(q, k, v), (weights.masked_fill(keep == 0, 0) @ v) * scale)
    assert torch.autograd.gradcheck(fn, (q, k, v))
    # inside a recomputed part it keeps the weights instead of recomputing them: the same gradients
    import rlan.model.fused as fused

    fused._recomputing.active = True
    try:
        assert torch.autograd.gradcheck(fn, (q, k, v))
    finally:
        fused._recomputing.active = False


@pytest.mark.parametrize("memory_format", CHANNELS)
def test_fused_functions_match_values_and_pass_gradcheck(memory_format):
    torch.manual_seed(0)

    def leaf(*shape):
        return (
            torch.randn(*shape, dtype=torch.double).contiguous(memory_format=memory_format).requires_grad_()
        )

    gate, up = leaf(2, 3, 4, 4), leaf(2, 3, 4, 4)
    torch.testing.assert_close(swiglu(gate, up), F.silu(gate) * up)
    assert torch.autograd.gradcheck(swiglu, (gate, up))

    norm = nn.GroupNorm(2, 4).double()
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = leaf(3, 4, 5, 5)
    torch.testing.assert_close(group_norm_gelu(x, norm), F.gelu(norm(x)))
    assert torch.autograd.gradcheck(lambda x, w, b: group_norm_gelu(x, norm), (x, norm.weight, norm.bias))

    down = nn.Conv2d(3, 4, 3, padding=1, bias=False).double()
    up_out = leaf(2, 6, 5, 5)
    expected = torch.tanh(down(F.silu(up_out[:, :3]) * up_out[:, 3:]))
    torch.testing.assert_close(swiglu_down_tanh(up_out, down), expected)
    assert torch.autograd.gradcheck(lambda u, w: swiglu_down_tanh(u, down), (up_out, down.weight))


def test_soft_clamp_keeps_the_original_formula_and_gradient():
    def original(x, threshold, limit):
        span = limit - threshold
        knee = x.sign() * (threshold + span * torch.tanh((x.abs() - threshold).clamp_min(0) / (span / 2)))
        return torch.where(x.abs() <= threshold, x, knee)

    x = (torch.randn(400, dtype=torch.double) * 20).requires_grad_()
    y = x.detach().clone().requires_grad_()
    soft_clamp(x, 8.0, 10.0).sum().backward()
    original(y, 8.0, 10.0).sum().backward()
    torch.testing.assert_close(soft_clamp(x, 8.0, 10.0), original(y, 8.0, 10.0))
    torch.testing.assert_close(x.grad, y.grad)
    small = torch.randn(50)
    assert soft_clamp(small, 8.0, 10.0) is small  # nothing beyond the knee: the identity, no graph


@pytest.mark.parametrize("memory_format", CHANNELS)
def test_factored_lora_equals_the_dense_delta(memory_format):
    torch.manual_seed(0)
    y = torch.randn(2, 16, 3, 5).contiguous(memory_format=memory_format)
    left, right = torch.randn(2, 16, 4), torch.randn(2, 4, 16)
    delta = left @ right
    dense = y + torch.einsum("bdhw,bde->behw", y, delta)
    torch.testing.assert_close(apply_lora(y, delta), dense, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(apply_lora(y, delta, (left, right)), dense, atol=1e-4, rtol=1e-5)


def _grads(model, batch, plain: bool, monkeypatch) -> dict[str, torch.Tensor]:
    if plain:
        monkeypatch.setattr(fused_module, "recompute", lambda fn, *args, random=False: fn(*args))
    torch.manual_seed(1)
    out = model(*batch, ModelStages(delta_scale=0.5))
    (out.logits.square().mean() + out.lora.reg_loss).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return grads


def test_recomputation_gives_the_same_gradients_with_dropout_on(monkeypatch):
    model = small_model(dropout=0.2)  # training mode: every dropout draws masks
    batch = random_batch(2, 3, 26)  # a large canvas: the solver attention and MSRE are recomputed too
    assert 26 * 26 >= fused_module.LARGE_CANVAS
    calls = []
    checkpoint = fused_module.checkpoint
    monkeypatch.setattr(
        fused_module, "checkpoint", lambda fn, *a, **k: calls.append(fn) or checkpoint(fn, *a, **k)
    )
    recomputed = _grads(model, batch, False, monkeypatch)
    assert len(calls) == 4 + model.config.num_solver_steps  # 2 embeddings, FFN, MSRE, each attention step
    _grads(model, random_batch(2, 3, 25), False, monkeypatch)
    assert len(calls) == 4 + model.config.num_solver_steps  # below LARGE_CANVAS nothing is recomputed
    plain = _grads(model, batch, True, monkeypatch)
    assert len(calls) == 4 + model.config.num_solver_steps  # the plain run recomputed nothing
    assert recomputed.keys() == plain.keys()
    for name in plain:
        torch.testing.assert_close(recomputed[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)


def test_intermediate_logits_have_the_same_values_and_no_graph(monkeypatch):
    model = small_model().eval()
    batch = random_batch(2, 2, 6)
    t = model.config.num_solver_steps
    with torch.enable_grad():
        last = model(*batch)
        monkeypatch.setattr(type(model.solver), "all_step_logits", True)
        out = model(*batch)
        monkeypatch.setattr(type(model.solver), "intermediate_grad", True)
        full = model(*batch)
    assert len(last.all_logits) == 1 and len(out.all_logits) == len(full.all_logits) == t
    torch.testing.assert_close(last.logits, out.logits)  # skipping the earlier heads changes nothing
    assert all(not x.requires_grad for x in out.all_logits[:-1]) and out.logits.requires_grad
    assert all(x.requires_grad for x in full.all_logits)
    for a, b in zip(out.all_logits, full.all_logits):
        torch.testing.assert_close(a, b)
