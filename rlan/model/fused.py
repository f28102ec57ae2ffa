"""Hand-written backward passes that keep less for the backward than autograd's op-by-op graph.

Same values and gradients as the plain expressions (tests/model/test_fast_ops.py checks both); each
saves only its inputs and recomputes the rest, which is what bounds the memory of the T solver steps:
- dropout_attention: softmax(q k^T / sqrt(d)) with dropout, @ v. Autograd kept the (B, heads, HW, keys)
  weights twice per step (softmax output and dropped copy); this keeps q, k, v and a one-byte mask and
  recomputes the weights in the backward (one more q k^T product).
- swiglu: silu(gate) * up, without keeping silu(gate).
- soft_clamp: identity up to the threshold, then a tanh knee. Keeps x only; when no element is beyond
  the threshold (the usual case on CPU, checked with one reduction) it is the identity and keeps nothing.
- group_norm_gelu: GELU(GroupNorm(x)), keeping x and the group statistics, not the normalised map.
- swiglu_down_tanh: tanh(conv(silu(gate) * up)), keeping the conv input's factors, not their product.
- recompute / recompute_if_large: torch.utils.checkpoint for cheap parts with large activations.
Off the CPU and under autocast the plain ops run instead (see _plain).
"""

from __future__ import annotations

import math
import threading
from contextlib import nullcontext

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from rlan.model.dropout import drawing_from, keep_mask, mask_generator

# .active is True inside `recompute`: what a function keeps there is dropped after the first run and,
# after the second run (in the backward), lives only until that part's gradients are done. So the
# attention keeps its weights there instead of recomputing them a third time. Per thread: canvas groups
# run in threads of their own (rlan/model/lanes.py).
_recomputing = threading.local()


def _in_recompute() -> bool:
    return getattr(_recomputing, "active", False)


class _DropoutAttention(torch.autograd.Function):
    # Written as P (softmax weights), Pd = P with the dropped entries zeroed, ks = 1 / (1 - p):
    # out = ks Pd v. Each pass over the (..., Q, T) weights costs more than the small products, so the
    # backward makes as few as it can: the gradient of the scores is (gs v^T) * Pd - P rowsum(...), with
    # gs = ks grad_out, which needs neither the mask again nor a copy of the weights.
    @staticmethod
    def forward(ctx, q, k, v, p: float):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()  # else every matmul copies them
        scale = 1.0 / math.sqrt(q.shape[-1])
        weights = torch.softmax((q * scale) @ k.transpose(-2, -1), dim=-1)
        keep, keep_scale = keep_mask(weights.shape, p, weights.device)
        if _in_recompute():
            kept = weights * keep
            ctx.save_for_backward(q, k, v, keep, weights, kept)
        else:
            kept = weights.mul_(keep)
            ctx.save_for_backward(q, k, v, keep)
        ctx.scales = (scale, keep_scale)
        return (kept @ v).mul_(keep_scale)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, keep, *saved = ctx.saved_tensors
        scale, keep_scale = ctx.scales
        qs = q * scale
        if saved:
            weights, kept = saved
        else:
            weights = torch.softmax(qs @ k.transpose(-2, -1), dim=-1)
            kept = weights * keep
        gs = grad_out * keep_scale
        grad_v = kept.transpose(-2, -1) @ gs if ctx.needs_input_grad[2] else None
        grad = (gs @ v.transpose(-2, -1)).mul_(kept)  # d loss / d weights, times the weights
        grad.addcmul_(weights, grad.sum(-1, keepdim=True), value=-1.0)  # the softmax backward
        grad_q = (grad @ k).mul_(scale) if ctx.needs_input_grad[0] else None
        grad_k = grad.transpose(-2, -1) @ qs if ctx.needs_input_grad[1] else None
        return grad_q, grad_k, grad_v, None


def dropout_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float) -> torch.Tensor:
    """(..., Q, d), (..., T, d), (..., T, d) -> (..., Q, d): scaled dot-product attention, dropout p on
    the weights (the CPU mask of rlan.model.dropout; torch's fused attention off the CPU)."""
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p)
    return _DropoutAttention.apply(q, k, v, p)


def mix(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor | float) -> torch.Tensor:
    """(1 - weight) a + weight b: one lerp when the dtypes agree (autocast can make them differ)."""
    same = a.dtype == b.dtype and (not torch.is_tensor(weight) or weight.dtype == a.dtype)
    return torch.lerp(a, b, weight) if same else (1 - weight) * a + weight * b


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up):
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, grad_out):
        gate, up = ctx.saved_tensors
        sig = torch.sigmoid(gate)
        silu = gate * sig
        grad_up = grad_out * silu
        # d silu / d gate = sig * (1 + gate * (1 - sig)) = sig + silu * (1 - sig)
        grad_gate = grad_out * up * (sig + silu * (1.0 - sig))
        return grad_gate, grad_up


def _plain(x: torch.Tensor) -> bool:
    """Off the CPU, or under autocast, the fused steps give way to the plain ops: they were written for
    fp32 CPU memory, and autocast picks per-op dtypes that a hand-written backward would have to copy."""
    return x.device.type != "cpu" or torch.is_autocast_enabled(x.device.type)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    if _plain(gate):
        return F.silu(gate) * up
    return _SwiGLU.apply(gate, up)


def _knee(x: torch.Tensor, threshold: float, limit: float) -> torch.Tensor:
    """tanh((|x| - threshold)+ / (span / 2)), the part of the knee beyond the threshold."""
    span = limit - threshold
    return torch.tanh((x.abs() - threshold).clamp_min_(0.0).div_(span / 2))


class _SoftClamp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, threshold: float, limit: float):
        ctx.save_for_backward(x)
        ctx.bounds = (threshold, limit)
        knee = _knee(x, threshold, limit).mul_(limit - threshold)
        return x.clamp(-threshold, threshold).addcmul_(x.sign(), knee)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        threshold, limit = ctx.bounds
        # 1 inside the threshold; beyond it span * sech^2(u) * 2 / span = 2 (1 - tanh^2 u).
        knee = _knee(x, threshold, limit)
        slope = torch.where(x.abs() <= threshold, 1.0, 2.0 * (1.0 - knee * knee))
        return grad_out * slope, None, None


def soft_clamp(x: torch.Tensor, threshold: float, limit: float) -> torch.Tensor:
    """Identity for |x| <= threshold, then a tanh knee that never exceeds limit (ref 3.7)."""
    if torch.compiler.is_compiling():  # the compiler fuses the plain formula (and a check would break)
        span = limit - threshold
        knee = x.sign() * (threshold + span * torch.tanh((x.abs() - threshold).clamp_min(0) / (span / 2)))
        return torch.where(x.abs() <= threshold, x, knee)
    if x.device.type == "cpu":
        # aminmax copies a non-contiguous input; a channels-last map is contiguous seen as (B, H, W, C)
        dense = x.permute(0, 2, 3, 1) if x.dim() == 4 and not x.is_contiguous() else x
        low, high = torch.aminmax(dense) if x.numel() else (x.new_zeros(()), x.new_zeros(()))
        if bool(high <= threshold) and bool(low >= -threshold):
            return x  # nothing beyond the knee: exactly the identity (on GPUs the check would sync)
    return _SoftClamp.apply(x, threshold, limit)


# Canvases of this many pixels or more (sides 26-30, the top size bucket) set a run's memory peak; the
# recomputations, which cost time as well as saving memory (the support and injector parts, MSRE, the
# solver's cross-attention), run only there.
LARGE_CANVAS = 26 * 26


def recompute_if_large(pixels: int, fn, *args, random: bool = False):
    """recompute(fn, *args) on canvases of LARGE_CANVAS pixels or more, else fn(*args)."""
    return recompute(fn, *args, random=random) if pixels >= LARGE_CANVAS else fn(*args)


def recompute(fn, *args, random: bool = False):
    """fn(*args), keeping only its inputs for the backward and running it again there.

    For cheap parts with large activations (MSRE's per-clue maps, the injector's 4D-wide FFN, the
    solver's cross-attention). With random=True the RNG state is saved and restored around the second
    run, so dropout inside draws the same masks: the default generator's by torch.utils.checkpoint, that
    of the thread's mask generator (rlan.model.dropout.drawing_from) here.
    """
    if not torch.is_grad_enabled():
        return fn(*args)

    def run(*inputs):
        previous, _recomputing.active = _in_recompute(), True
        try:
            return fn(*inputs)
        finally:
            _recomputing.active = previous

    generator = mask_generator() if random else None
    if generator is None:
        return checkpoint(run, *args, use_reentrant=False, preserve_rng_state=random)
    # A clone of the generator as it is now draws the recomputation's masks again.
    state = generator.get_state()

    def contexts():
        return nullcontext(), drawing_from(torch.Generator().set_state(state))

    return checkpoint(run, *args, use_reentrant=False, preserve_rng_state=False, context_fn=contexts)


class _GroupNormGELU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, groups: int, eps: float):
        n, c = x.shape[:2]
        shape = (n, c, x.numel() // max(n * c, 1), groups, eps)
        y, mean, rstd = torch.ops.aten.native_group_norm(x, weight, bias, *shape)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.shape = shape
        return F.gelu(y)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        n, c, hw, groups, eps = ctx.shape
        y = torch.ops.aten.native_group_norm(x, weight, bias, n, c, hw, groups, eps)[0]
        # The group-norm kernels expect grad_y in x's memory format (autograd may hand over another).
        grad_y = torch.ops.aten.gelu_backward(grad_out, y).contiguous(memory_format=_format(x))
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]]
        grad_x, grad_w, grad_b = torch.ops.aten.native_group_norm_backward(
            grad_y, x, mean, rstd, weight, n, c, hw, groups, mask
        )
        return grad_x, grad_w, grad_b, None, None


def _format(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def group_norm_gelu(x: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """gelu(norm(x)) keeping only x (and the group statistics) for the backward."""
    if _plain(x):
        return F.gelu(norm(x))
    return _GroupNormGELU.apply(x, norm.weight, norm.bias, norm.num_groups, norm.eps)


class _SwiGLUDownTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, up_out, weight, padding: int):
        gate, up = up_out.chunk(2, dim=1)
        out = torch.tanh(F.conv2d(F.silu(gate) * up, weight, padding=padding))
        ctx.save_for_backward(up_out, weight, out)
        ctx.padding = padding
        return out

    @staticmethod
    def backward(ctx, grad_out):
        up_out, weight, out = ctx.saved_tensors
        gate, up = up_out.chunk(2, dim=1)
        sig = torch.sigmoid(gate)
        silu = gate * sig
        product = silu * up  # recomputed instead of kept
        grad_pre = grad_out * (1.0 - out * out)
        p = ctx.padding
        grad_product, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad_pre, product, weight, None, [1, 1], [p, p], [1, 1], False, [0, 0], 1,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False],
        )  # fmt: skip
        grad_up_out = None
        if grad_product is not None:
            grad_gate = grad_product * up * (sig + silu * (1.0 - sig))
            grad_up_out = torch.cat([grad_gate, grad_product * silu], dim=1)
        return grad_up_out, grad_weight, None


def swiglu_down_tanh(up_out: torch.Tensor, down: nn.Conv2d) -> torch.Tensor:
    """tanh(down(silu(gate) * up)) with (gate, up) = up_out's channel halves; the product is recomputed
    in the backward instead of kept (down: a bias-free, stride-1 conv)."""
    if _plain(up_out):
        gate, up = up_out.chunk(2, dim=1)
        return torch.tanh(down(F.silu(gate) * up))
    return _SwiGLUDownTanh.apply(up_out, down.weight, down.padding[0])
