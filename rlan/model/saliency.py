"""Dynamic Saliency Controller (ref 3.4): K sequential soft spatial attentions ("clues") with a stop head."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from rlan.constants import MAX_GRID_SIDE, NUM_COLORS, NUM_INPUT_TOKENS, PAD
from rlan.model.dropout import Dropout
from rlan.model.encoder import sinusoid_2d

SCORE_CLAMP = 50.0
FOREGROUND_PRIOR = 3.0
MASK_PENALTY = 1.5
MASK_DECAY = 0.98


class Clues(NamedTuple):
    attention: torch.Tensor  # (B, K, H, W), sums to 1 over valid pixels, 0 on PAD
    centroids: torch.Tensor  # (B, K, 2) (row, col) in [0, 1] canvas units
    stop_logits: torch.Tensor  # (B, K)
    confidences: torch.Tensor  # (B, K) 1 - H(a) / ln(#valid pixels)


def squash_stop_logits(raw: torch.Tensor, training: bool) -> torch.Tensor:
    """The original's 6 tanh(x/6); in training, where |raw| > 5 the gradient passes straight through."""
    squashed = 6.0 * torch.tanh(raw / 6.0)
    if not training:
        return squashed
    return torch.where(raw.abs() > 5.0, raw + (squashed - raw).detach(), squashed)


def complexity_signals(query_inputs: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, 3): [grid area / 900, foreground share, distinct colours / 10], all counted on the real grid."""
    area = valid.flatten(1).sum(1).float()
    foreground = ((query_inputs > 0) & valid).flatten(1).sum(1).float()
    counts = F.one_hot(query_inputs.flatten(1), NUM_INPUT_TOKENS)[..., :NUM_COLORS].sum(1)
    distinct = (counts > 0).sum(1).float()
    return torch.stack([area / MAX_GRID_SIDE**2, foreground / area.clamp_min(1), distinct / NUM_COLORS], 1)


class StopHead(nn.Module):
    """[attended (D), confidence (1), context (D), complexity (3)] -> one stop logit per clue."""

    def __init__(self, hidden_dim: int, dropout: float):
        super().__init__()
        d = hidden_dim
        self.hidden = nn.Linear(2 * d + 4, d // 2)
        self.drop = Dropout(dropout)
        self.out = nn.Linear(d // 2, 1)
        # The original's init: confidence starts as a strong "stop" signal, context as a weaker one.
        nn.init.kaiming_normal_(self.hidden.weight)
        nn.init.zeros_(self.hidden.bias)
        with torch.no_grad():
            self.hidden.weight[:, d].normal_(1.5, 0.5)
            self.hidden.weight[:, d + 1 : 2 * d + 1].normal_(0.0, 0.2)
        nn.init.normal_(self.out.weight, std=0.1)
        nn.init.constant_(self.out.bias, -1.0)  # sigmoid(-1) ~ 0.27: most clues start "in use"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(F.gelu(self.hidden(x)))).squeeze(-1)


class DynamicSaliencyController(nn.Module):
    def __init__(self, hidden_dim: int, max_clues: int, dropout: float, stop_logit_squash: bool):
        super().__init__()
        d, k = hidden_dim, max_clues
        self.queries = nn.Parameter(torch.empty(k, d))
        nn.init.xavier_uniform_(self.queries)
        with torch.no_grad():  # a fixed pattern so the K clues do not start identical
            phase = 2 * math.pi * torch.arange(k)[:, None] / k + 10 * torch.arange(d)[None, :] / d
            pattern = torch.where(torch.arange(d) % 2 == 0, torch.sin(phase), torch.cos(phase))
            self.queries.add_(0.3 * pattern)
        self.query_norm = nn.LayerNorm(d)
        self.feature_norm = nn.LayerNorm(d)
        self.w_q = nn.Linear(d, d)
        self.w_k = nn.Linear(d, d)
        self.w_v = nn.Linear(d, d)
        self.gru = nn.GRUCell(d, d)
        self.stop_head = StopHead(d, dropout)
        self.register_buffer("position", 0.5 * sinusoid_2d(MAX_GRID_SIDE, d), persistent=False)
        self.stop_logit_squash = stop_logit_squash

    def forward(
        self, features: torch.Tensor, query_inputs: torch.Tensor, context: torch.Tensor, temperature: float
    ) -> Clues:
        b, d, h, w = features.shape
        valid = query_inputs != PAD
        valid = valid | ~valid.flatten(1).any(1)[:, None, None]  # an all-PAD canvas: attend anywhere
        valid_flat = valid.flatten(1)
        n_valid = valid_flat.sum(1).float()

        # Everything that does not depend on the clue state is computed once.
        position = self.position[:h, :w].reshape(h * w, d)
        x = self.feature_norm(features.flatten(2).transpose(1, 2)) + position
        keys = 4.0 * F.normalize(self.w_k(x), dim=-1) + 2.0 * position  # score = q_hat . keys + bias
        values = self.w_v(x)
        foreground = ((query_inputs > 0) & (query_inputs != PAD)).flatten(1).float() * FOREGROUND_PRIOR
        rows = torch.arange(h, device=features.device, dtype=features.dtype) / max(h - 1, 1)
        cols = torch.arange(w, device=features.device, dtype=features.dtype) / max(w - 1, 1)
        grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(h * w, 2)

        mask = valid_flat.float()
        state = features.new_zeros(b, d)
        attentions, attended, confidences = [], [], []
        for k in range(self.queries.shape[0]):
            q = F.normalize(self.w_q(self.query_norm(self.queries[k] + state)), dim=-1)
            score = torch.einsum("bd,bjd->bj", q, keys) + foreground
            score = score + MASK_PENALTY * torch.log(mask.clamp_min(1e-6))
            score = (score.clamp(-SCORE_CLAMP, SCORE_CLAMP) / temperature).clamp(-SCORE_CLAMP, SCORE_CLAMP)
            a = torch.softmax(score.masked_fill(~valid_flat, float("-inf")), dim=-1)
            v = torch.einsum("bj,bjd->bd", a, values)
            state = self.gru(v, state)
            entropy = -(a * torch.log(a.clamp(1e-6, 1.0))).sum(-1)
            confidences.append(1.0 - entropy / torch.log(n_valid.clamp_min(2.0)))
            # Later clues are pushed away from what earlier clues covered; no gradient through the mask.
            mask = (mask * (1.0 - MASK_DECAY * a.detach())).clamp_min(1e-6)
            attentions.append(a)
            attended.append(v)

        attention = torch.stack(attentions, 1)
        confidence = torch.stack(confidences, 1)
        kk = attention.shape[1]
        stop_input = torch.cat(
            [
                torch.stack(attended, 1),
                confidence[..., None],
                context[:, None].expand(b, kk, d),
                complexity_signals(query_inputs, valid)[:, None].expand(b, kk, 3),
            ],
            dim=-1,
        )
        stop_logits = self.stop_head(stop_input)
        if self.stop_logit_squash:
            stop_logits = squash_stop_logits(stop_logits, self.training)
        return Clues(
            attention=attention.view(b, kk, h, w),
            centroids=attention @ grid,
            stop_logits=stop_logits,
            confidences=confidence,
        )
