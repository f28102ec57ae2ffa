"""RecursiveSolver (ref 3.7): aggregate the clues, then refine a hidden map with a ConvGRU for T steps."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from rlan.config import ModelConfig
from rlan.data.constants import NUM_CLASSES, NUM_INPUT_TOKENS
from rlan.model.context import support_tokens
from rlan.model.output import LoraDeltas

HIDDEN_CLAMP = (8.0, 10.0)


def soft_clamp(x: torch.Tensor, threshold: float, limit: float) -> torch.Tensor:
    """Identity for |x| <= threshold, then a tanh knee that never exceeds limit (ref 3.7)."""
    span = limit - threshold
    knee = x.sign() * (threshold + span * torch.tanh((x.abs() - threshold).clamp_min(0) / (span / 2)))
    return torch.where(x.abs() <= threshold, x, knee)


def apply_lora(y: torch.Tensor, delta: torch.Tensor | None) -> torch.Tensor:
    """y + y . dW on the channels of every pixel: (B, D, H, W) with a per-sample (B, D, D) map."""
    if delta is None:
        return y
    b, d, h, w = y.shape
    return y + torch.bmm(delta.transpose(1, 2), y.reshape(b, d, h * w)).view(b, d, h, w)


def residual_weight(step: int) -> float:
    """rho_t of the pull back to the first state: 0.3 up to t = 2, then down by 0.05 a step to 0.1."""
    return 0.3 if step <= 2 else max(0.1, 0.3 - 0.05 * (step - 2))


def swiglu_width(hidden_dim: int, multiple: int) -> int:
    return math.ceil(round(2 * hidden_dim * 2 / 3) / multiple) * multiple


class SwiGLUConv(nn.Module):
    def __init__(self, hidden_dim: int, width: int):
        super().__init__()
        self.up = nn.Conv2d(hidden_dim, 2 * width, 3, padding=1, bias=False)
        self.down = nn.Conv2d(width, hidden_dim, 3, padding=1, bias=False)
        for conv in (self.up, self.down):
            nn.init.trunc_normal_(conv.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.up(x).chunk(2, dim=1)
        return self.down(F.silu(gate) * up)


class ConvGRUCell(nn.Module):
    """Gates r, u = Conv3x3[z, h]; candidate = tanh(SwiGLU(Conv1x1[z, r*h])); LoRA on the conv outputs.

    Each conv over cat[z, h] is held as a z part and an h part (the same weights, split): z does not change
    between steps, so its part is computed once per forward by input_terms.
    """

    def __init__(self, hidden_dim: int, width: int):
        super().__init__()
        d = hidden_dim
        self.gates_z = nn.Conv2d(2 * d, 2 * d, 3, padding=1)
        self.gates_h = nn.Conv2d(d, 2 * d, 3, padding=1, bias=False)
        self.candidate_z = nn.Conv2d(2 * d, d, 1)
        self.candidate_h = nn.Conv2d(d, d, 1, bias=False)
        self.swiglu = SwiGLUConv(d, width)
        self.norm = nn.GroupNorm(8, d)

    def input_terms(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gates_z(z), self.candidate_z(z)

    def forward(self, z_gates, z_candidate, h: torch.Tensor | None, lora: LoraDeltas | None):
        # h is None on the first step: the zero state adds nothing to any conv, so skip them.
        gates = z_gates if h is None else z_gates + self.gates_h(h)
        reset, update = gates.chunk(2, dim=1)
        d_reset, d_update, d_candidate = (
            (None, None, None) if lora is None else (lora.gru_reset, lora.gru_update, lora.gru_candidate)
        )
        reset = torch.sigmoid(apply_lora(reset, d_reset))
        update = torch.sigmoid(apply_lora(update, d_update))
        p = z_candidate if h is None else z_candidate + self.candidate_h(reset * h)
        candidate = torch.tanh(self.swiglu(apply_lora(p, d_candidate)))
        mixed = update * candidate if h is None else (1 - update) * h + update * candidate
        return self.norm(soft_clamp(mixed, *HIDDEN_CLAMP))


class SolverCrossAttention(nn.Module):
    """The hidden map attends to the support tokens; a learned per-pixel gate decides how much to take."""

    def __init__(self, hidden_dim: int, num_heads: int, dropout: float):
        super().__init__()
        d = hidden_dim
        self.norm_q = nn.LayerNorm(d)
        self.norm_kv = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, num_heads, dropout=dropout, batch_first=True)
        self.gate = nn.Linear(d, d)
        self.norm_out = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def prepare(self, support_maps: torch.Tensor, support_mask: torch.Tensor):
        """Normalised tokens and key-padding mask, once per forward for all T steps."""
        tokens, padding = support_tokens(support_maps, support_mask)
        return self.norm_kv(tokens), padding

    def forward(self, h: torch.Tensor, tokens: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        b, d, hh, ww = h.shape
        x = h.flatten(2).transpose(1, 2)
        attended = self.attn(self.norm_q(x), tokens, tokens, key_padding_mask=padding, need_weights=False)[0]
        x = self.norm_out(x + torch.sigmoid(self.gate(x)) * self.drop(attended))
        return x.transpose(1, 2).reshape(b, d, hh, ww)


class RecursiveSolver(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.hidden_dim
        self.aggregate = nn.Sequential(nn.Conv2d(d, d, 1), nn.GELU(), nn.GroupNorm(8, d))
        self.input_embed = nn.Embedding(NUM_INPUT_TOKENS, d)  # copy path of the query grid
        self.drop = nn.Dropout(config.dropout)
        self.cell = ConvGRUCell(d, swiglu_width(d, config.swiglu_multiple))
        self.context_attention = (
            SolverCrossAttention(d, config.num_heads, config.dropout) if config.use_solver_context else None
        )
        self.head = nn.Sequential(
            nn.Conv2d(d, d, 3, padding=1), nn.GELU(), nn.GroupNorm(8, d), nn.Conv2d(d, NUM_CLASSES, 1)
        )
        nn.init.zeros_(self.head[-1].bias)
        self.num_steps = config.num_solver_steps
        self.logit_clamp = (config.output_soft_clamp, config.output_soft_clamp_max)

    def aggregate_clues(self, clue_features, attention, stop_logits) -> torch.Tensor:
        """sum_k A_k u_k Z_k / sum_k u_k with u = 1 - sigmoid(stop); the denominator carries no gradient,
        so the task loss reaches the stop head through the numerator only."""
        usage = 1.0 - torch.sigmoid(stop_logits)
        weights = attention * usage[:, :, None, None]
        total = torch.einsum("bkhw,bkdhw->bdhw", weights, clue_features)
        return self.aggregate(total / usage.sum(1).detach().clamp_min(1e-6)[:, None, None, None])

    def forward(
        self,
        clue_features: torch.Tensor,
        attention: torch.Tensor,
        stop_logits: torch.Tensor,
        query_inputs: torch.Tensor,
        support: tuple[torch.Tensor, torch.Tensor] | None = None,
        lora: LoraDeltas | None = None,
    ) -> list[torch.Tensor]:
        """Logits (B, NUM_CLASSES, H, W) of every step; support = (S, mask) turns on cross-attention."""
        agg = self.aggregate_clues(clue_features, attention, stop_logits)
        embedded = self.input_embed(query_inputs).permute(0, 3, 1, 2)
        # One dropout mask for all steps (as in variational RNN dropout), so z's conv terms are reused.
        z_gates, z_candidate = self.cell.input_terms(self.drop(torch.cat([agg, embedded], dim=1)))
        context = None
        if support is not None and self.context_attention is not None:
            context = self.context_attention.prepare(*support)

        h = first = None
        logits = []
        for t in range(self.num_steps):
            h = self.cell(z_gates, z_candidate, h, lora)
            if context is not None:
                h = self.context_attention(h, *context)
            if t == 0:
                first = h
            else:
                rho = residual_weight(t)
                h = (1 - rho) * h + rho * first
            out = apply_lora(h, None if lora is None else lora.output_head)
            logits.append(soft_clamp(self.head(out), *self.logit_clamp))
        return logits
