"""RecursiveSolver (ref 3.7): aggregate the clues, then refine a hidden map with a ConvGRU for T steps."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from rlan.config import ModelConfig
from rlan.constants import NUM_CLASSES, NUM_INPUT_TOKENS
from rlan.model.attention import Keys, attend, project_keys
from rlan.model.context import support_tokens
from rlan.model.dropout import Dropout
from rlan.model.fused import mix, recompute_if_large, soft_clamp, swiglu, swiglu_down_tanh
from rlan.model.output import LoraDeltas

HIDDEN_CLAMP = (8.0, 10.0)


def apply_lora(
    y: torch.Tensor, delta: torch.Tensor | None, factors: tuple[torch.Tensor, torch.Tensor] | None = None
) -> torch.Tensor:
    """y + y . dW on the channels of every pixel: (B, D, H, W) with a per-sample (B, D, D) map.

    With factors (left (B, D, r), right (B, r, D), dW = left @ right) it is computed as
    (y left) right: 2r/D of the dense product's FLOPs (1/8 at hidden 128, rank 8). A channels-last y
    is used as the (B, H*W, D) matrix it already is, without a copy.
    """
    if delta is None:
        return y
    b, d, h, w = y.shape
    if y.is_contiguous(memory_format=torch.channels_last):
        rows = y.permute(0, 2, 3, 1).reshape(b, h * w, d)  # a view
        term = rows @ delta if factors is None else (rows @ factors[0]) @ factors[1]
        return y + term.view(b, h, w, d).permute(0, 3, 1, 2)
    flat = y.reshape(b, d, h * w)
    if factors is None:
        return y + torch.bmm(delta.transpose(1, 2), flat).view(b, d, h, w)
    left, right = factors
    return y + torch.bmm(right.transpose(1, 2), torch.bmm(left.transpose(1, 2), flat)).view(b, d, h, w)


def lora_terms(lora: LoraDeltas | None, target: str):
    """(delta, factors) of one target for apply_lora; (None, None) without LoRA."""
    if lora is None:
        return None, None
    return getattr(lora, target), None if lora.factors is None else lora.factors[target]


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
        return self.down(swiglu(gate, up))

    def forward_tanh(self, x: torch.Tensor) -> torch.Tensor:
        """tanh(forward(x)), keeping less for the backward (the gated product is recomputed)."""
        return swiglu_down_tanh(self.up(x), self.down)


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
        return (
            self.first(z_gates, z_candidate, lora) if h is None else self.step(z_gates, z_candidate, h, lora)
        )

    def first(self, z_gates, z_candidate, lora: LoraDeltas | None) -> torch.Tensor:
        update = torch.sigmoid(apply_lora(z_gates.chunk(2, dim=1)[1], *lora_terms(lora, "gru_update")))
        candidate = self.swiglu.forward_tanh(apply_lora(z_candidate, *lora_terms(lora, "gru_candidate")))
        return self.norm(soft_clamp(update * candidate, *HIDDEN_CLAMP))

    def step(self, z_gates, z_candidate, h: torch.Tensor, lora: LoraDeltas | None) -> torch.Tensor:
        reset, update = (z_gates + self.gates_h(h)).chunk(2, dim=1)
        reset = torch.sigmoid(apply_lora(reset, *lora_terms(lora, "gru_reset")))
        update = torch.sigmoid(apply_lora(update, *lora_terms(lora, "gru_update")))
        p = z_candidate + self.candidate_h(reset * h)
        candidate = self.swiglu.forward_tanh(apply_lora(p, *lora_terms(lora, "gru_candidate")))
        return self.norm(soft_clamp(mix(h, candidate, update), *HIDDEN_CLAMP))  # (1 - u) h + u c


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
        self.drop = Dropout(dropout)

    def prepare(self, support_maps: torch.Tensor, support_mask: torch.Tensor) -> Keys:
        """Normalised and projected keys and values, once per forward for all T steps."""
        tokens, padding = support_tokens(support_maps, support_mask)
        return project_keys(self.attn, self.norm_kv(tokens), padding)

    def run(self, h: torch.Tensor, keys: Keys) -> torch.Tensor:
        """forward, recomputed in the backward on large canvases (rlan.model.fused.LARGE_CANVAS).

        It keeps ~7 (B, HW, D) maps per solver step for ~2% of the step's FLOPs. Recomputing costs
        ~7% of the step's time (it redraws the dropout masks), so only where the memory peaks are.
        """
        return recompute_if_large(h.shape[-2] * h.shape[-1], self, h, keys, random=True)

    def forward(self, h: torch.Tensor, keys: Keys) -> torch.Tensor:
        b, d, hh, ww = h.shape
        x = h.flatten(2).transpose(1, 2)
        attended = attend(self.attn, self.norm_q(x), keys)
        x = self.norm_out(x + torch.sigmoid(self.gate(x)) * self.drop(attended))
        return x.transpose(1, 2).reshape(b, d, hh, ww)


class RecursiveSolver(nn.Module):
    # The losses read the last step's logits only (deep supervision is off, reference 4.6), so the
    # output head runs on the last step only: on the T - 1 earlier ones it was 7% of the forward's FLOPs
    # spent on logits nothing read. all_step_logits computes every step's (all_logits, e.g. to look at how
    # the answer forms), without a graph; intermediate_grad also gives them one, to train on them.
    all_step_logits: bool = False
    intermediate_grad: bool = False

    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.hidden_dim
        self.aggregate = nn.Sequential(nn.Conv2d(d, d, 1), nn.GELU(), nn.GroupNorm(8, d))
        self.input_embed = nn.Embedding(NUM_INPUT_TOKENS, d)  # copy path of the query grid
        self.drop = Dropout(config.dropout)
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
        agg: torch.Tensor,
        query_inputs: torch.Tensor,
        support: tuple[torch.Tensor, torch.Tensor] | None = None,
        lora: LoraDeltas | None = None,
    ) -> list[torch.Tensor]:
        """Logits (B, NUM_CLASSES, H, W) of the last step, or of every step (all_step_logits), from the
        aggregated clues (aggregate_clues); support = (S, mask) turns on cross-attention."""
        embedded = self.input_embed(query_inputs).permute(0, 3, 1, 2)
        # One dropout mask for all steps (as in variational RNN dropout), so z's conv terms are reused.
        z = self.drop(torch.cat([agg, embedded], dim=1)).contiguous(memory_format=torch.channels_last)
        # Channels-last from here on: the convs, the per-pixel LoRA and the attention's (B, H*W, D)
        # view of the hidden map all use the same memory without copies.
        z_gates, z_candidate = self.cell.input_terms(z)
        context = None
        if support is not None and self.context_attention is not None:
            context = self.context_attention.prepare(*support)

        h = first = None
        logits = []
        for t in range(self.num_steps):
            h = self.cell(z_gates, z_candidate, h, lora)
            if context is not None:
                h = self.context_attention.run(h, context)
            if t == 0:
                first = h
            else:
                h = mix(h, first, residual_weight(t))  # (1 - rho) h + rho h0
            last = t == self.num_steps - 1
            if not (last or self.all_step_logits or self.intermediate_grad):
                continue
            graph = torch.is_grad_enabled() and (self.intermediate_grad or last)
            with torch.set_grad_enabled(graph):
                out = apply_lora(h, *lora_terms(lora, "output_head"))
                logits.append(soft_clamp(self.head(out), *self.logit_clamp))
        return logits
