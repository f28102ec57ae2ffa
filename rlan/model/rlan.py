"""RLAN: the parts composed (ref 3.1). Staged parts run only when the per-call ModelStages asks for them."""

from __future__ import annotations

import torch
import torch.nn as nn

from rlan.config import ModelConfig
from rlan.data.constants import MAX_GRID_SIDE
from rlan.model.context import ContextEncoder, CrossAttentionInjector, FiLM, support_context
from rlan.model.encoder import FeatureProjection, GridEncoder
from rlan.model.fused import recompute_if_large
from rlan.model.hyper_lora import HyperLoRA
from rlan.model.msre import MSRE
from rlan.model.output import LoraDeltas, ModelStages, RLANOutput
from rlan.model.saliency import DynamicSaliencyController
from rlan.model.solver import RecursiveSolver

DEFAULT_STAGES = ModelStages()


class RLAN(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        d = config.hidden_dim
        self.encoder = GridEncoder(d, config.dropout)
        self.feature_proj = FeatureProjection(d)
        self.context_encoder = ContextEncoder(d, config.context_downsample)
        self.film = FiLM(d)
        self.cross_injector = (
            CrossAttentionInjector(d, config.num_heads, config.dropout)
            if config.use_cross_attention_context
            else None
        )
        self.dsc = DynamicSaliencyController(d, config.max_clues, config.dropout, config.stop_logit_squash)
        self.msre = MSRE(d, config.msre_encoding_dim, config.msre_num_freq)
        self.hyper_lora = HyperLoRA(config) if config.use_hyperlora else None
        self.solver = RecursiveSolver(config)
        # Conv weights channels-last, as the maps they see are: oneDNN otherwise converts each weight (and
        # its gradient back) on every call. Values, state dicts and checkpoints are unchanged.
        self.to(memory_format=torch.channels_last)

    def encode_support(
        self, support_inputs: torch.Tensor, support_outputs: torch.Tensor, support_mask: torch.Tensor
    ) -> torch.Tensor:
        """Support maps S (B, N, D, s, s), zero in padded slots."""
        return self.context_encoder(support_inputs, support_outputs, support_mask)

    def forward(
        self,
        support_inputs: torch.Tensor,
        support_outputs: torch.Tensor,
        support_mask: torch.Tensor,
        query_inputs: torch.Tensor,
        stages: ModelStages = DEFAULT_STAGES,
    ) -> RLANOutput:
        support_maps = self.encode_support(support_inputs, support_outputs, support_mask)
        lora = None
        if stages.hyperlora and self.hyper_lora is not None:
            lora = self.hyper_lora(support_maps, support_mask, stages.delta_scale)
        return self.forward_with_lora(query_inputs, support_maps, support_mask, lora, stages)

    def aggregate_clues(self, features, centroids, attention, stop_logits, query_inputs) -> torch.Tensor:
        """MSRE clue features, weighted and summed over clues by the solver (B, D, H, W)."""
        clue_features = self.msre(features, centroids, query_inputs)
        return self.solver.aggregate_clues(clue_features, attention, stop_logits)

    def forward_with_lora(
        self,
        query_inputs: torch.Tensor,
        support_maps: torch.Tensor,
        support_mask: torch.Tensor,
        lora: LoraDeltas | None,
        stages: ModelStages = DEFAULT_STAGES,
    ) -> RLANOutput:
        """Predict query_inputs from given support maps and deltas (LOO holds a pair out via support_mask).

        Unlike the original's forward_with_lora, it takes the same staged path as forward (injection,
        DSC context, temperature), so the held-out prediction is made the way the main one is.
        """
        assert query_inputs.shape[-1] <= MAX_GRID_SIDE, f"canvas side {query_inputs.shape[-1]} > 30"
        features = self.feature_proj(self.encoder(query_inputs))
        context = support_context(support_maps, support_mask)
        if stages.cross_attention and self.cross_injector is not None:
            features = self.cross_injector(features, support_maps, support_mask)
        else:
            features = self.film(features, context)

        clues = self.dsc(features, query_inputs, context, stages.temperature)
        # MSRE's per-clue maps (B, K, D, H, W) are large and cheap: on large canvases they are recomputed
        # in the backward instead of kept (~2.5% of the step's time).
        aggregated = recompute_if_large(
            query_inputs.shape[-2] * query_inputs.shape[-1],
            self.aggregate_clues,
            *(features, clues.centroids, clues.attention, clues.stop_logits, query_inputs),
        )
        support = (support_maps, support_mask) if stages.solver_context else None
        all_logits = self.solver(aggregated, query_inputs, support, lora)
        return RLANOutput(
            logits=all_logits[-1],
            all_logits=all_logits,
            attention_maps=clues.attention,
            centroids=clues.centroids,
            stop_logits=clues.stop_logits,
            clues_used=(1.0 - torch.sigmoid(clues.stop_logits)).sum(1),
            confidences=clues.confidences,
            support_maps=support_maps,
            lora=lora,
            extras={"context": context},
        )
