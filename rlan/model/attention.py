"""Multi-head attention over support tokens, with the parameters of an nn.MultiheadAttention.

Same function as `mha(query, keys, keys, key_padding_mask=padding, need_weights=False)[0]`, three ways
cheaper on CPU:
- Keys and values are projected once (`project_keys`) and reused by every query that attends to them:
  the solver's T steps all attend to the same support tokens.
- Padded keys are left out instead of masked. Samples are grouped by their number of real keys and each
  group attends to exactly those (padded slots made about a third of the keys of ARC batches). A masked
  key has weight exactly 0, so this changes only the summation order.
- In training the attention dropout draws its mask with rlan.model.dropout (nn.MultiheadAttention's
  Bernoulli mask made the CPU attention twice as expensive); without dropout, and on GPUs, it is
  torch's fused scaled_dot_product_attention.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from rlan.model.fused import dropout_attention


@dataclass
class Keys:
    """Projected keys and values of one batch, grouped by how many real keys each sample has.

    keys/values: one (n_g, heads, T_g, head_dim) tensor per group, with only real keys. order: the batch
    permutation that puts the groups' samples in sequence; inverse: its inverse; sizes: samples per group.
    On GPUs there is one group with the full padded set and the padding mask (n, heads, 1, T), True where
    a key takes part.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    order: torch.Tensor | None
    inverse: torch.Tensor | None
    sizes: list[int]
    mask: torch.Tensor | None = None


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, d = x.shape
    return x.view(b, n, heads, d // heads).transpose(1, 2)


def project_keys(mha: nn.MultiheadAttention, tokens: torch.Tensor, padding: torch.Tensor) -> Keys:
    """tokens (B, T, D), padding (B, T) True where a key is ignored -> Keys for `attend`."""
    d, heads = mha.embed_dim, mha.num_heads
    kv = F.linear(tokens, mha.in_proj_weight[d:], mha.in_proj_bias[d:])
    k, v = (_heads(x, heads) for x in kv.chunk(2, dim=-1))
    if tokens.device.type != "cpu":
        return Keys([k], [v], None, None, [tokens.shape[0]], (~padding)[:, None, None, :])
    real = (~padding).sum(1)
    if bool((real == padding.shape[1]).all()):
        return Keys([k], [v], None, None, [tokens.shape[0]])
    order = torch.argsort(real, stable=True)
    counts = real[order].tolist()
    # Real keys first within each sample (the sort is stable, so their order is kept), then per group.
    first = torch.argsort(padding.to(torch.int8), dim=1, stable=True)[order]
    index = first[:, None, :, None].expand(-1, heads, -1, k.shape[-1])
    k, v = k.index_select(0, order).gather(2, index), v.index_select(0, order).gather(2, index)
    keys, values, sizes, start = [], [], [], 0
    for count in sorted(set(counts)):
        size = counts.count(count)
        keys.append(k[start : start + size, :, :count])
        values.append(v[start : start + size, :, :count])
        sizes.append(size)
        start += size
    return Keys(keys, values, order, torch.argsort(order), sizes)


def _attention(q, k, v, mask, p: float) -> torch.Tensor:
    if k.shape[2] == 0:  # no real key: nothing to attend to (nn.MultiheadAttention would give NaN)
        return torch.zeros_like(q)
    if p == 0.0 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
    return dropout_attention(q, k, v, p)


def attend(mha: nn.MultiheadAttention, query: torch.Tensor, keys: Keys) -> torch.Tensor:
    """query (B, Q, D) attends to the projected keys -> (B, Q, D), through the output projection."""
    d, heads = mha.embed_dim, mha.num_heads
    q = _heads(F.linear(query, mha.in_proj_weight[:d], mha.in_proj_bias[:d]), heads)
    p = mha.dropout if mha.training else 0.0
    # index_select, not q[order]: its backward is an index_add, where indexing's is a sorting index_put.
    if keys.order is not None:
        q = q.index_select(0, keys.order)
    parts = [
        _attention(qg, k, v, keys.mask, p)
        for qg, k, v in zip(q.split(keys.sizes), keys.keys, keys.values, strict=True)
    ]
    out = parts[0] if len(parts) == 1 else torch.cat(parts)
    if keys.order is not None:
        out = out.index_select(0, keys.inverse)
    b, _, n, _ = out.shape
    return F.linear(out.transpose(1, 2).reshape(b, n, d), mha.out_proj.weight, mha.out_proj.bias)
