"""RLAN: the parts composed (ref 3.1). Staged parts run only when the per-call ModelStages asks for them."""

from __future__ import annotations

import torch
import torch.nn as nn

from rlan.config import ModelConfig
from rlan.constants import MAX_GRID_SIDE, PAD
from rlan.model.canvas import CanvasGroup, canvas_for, canvas_groups, fit_canvas, sample_sides
from rlan.model.context import ContextEncoder, CrossAttentionInjector, FiLM, support_context
from rlan.model.encoder import FeatureProjection, GridEncoder
from rlan.model.fused import recompute_if_large
from rlan.model.hyper_lora import HyperLoRA
from rlan.model.lanes import group_cost, plan_lanes, run_groups
from rlan.model.msre import MSRE
from rlan.model.output import LoraDeltas, ModelStages, RLANOutput, joined_deltas
from rlan.model.saliency import DynamicSaliencyController
from rlan.model.solver import RecursiveSolver

DEFAULT_STAGES = ModelStages()
# What merge_canvas_groups reads of each group's output, besides its logits.
LANE_FIELDS = ("attention_maps", "centroids", "stop_logits", "clues_used", "confidences")


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
        self,
        support_inputs: torch.Tensor,
        support_outputs: torch.Tensor,
        support_mask: torch.Tensor,
        sides: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Support maps S (B, N, D, s, s), zero in padded slots. With model.canvas_sides each sample's pairs
        are encoded on its own canvas, chosen from `sides` (B,), by default the side of its support grids;
        pass rlan.losses.views.batch_sides(batch) to encode them as forward does."""
        canvases = None
        if self.config.canvas_sides is not None:
            sides = sample_sides(support_inputs, support_outputs) if sides is None else sides
            canvases = canvas_for(sides, self.config.canvas_sides)
        return self.context_encoder(support_inputs, support_outputs, support_mask, canvases)

    def forward(
        self,
        support_inputs: torch.Tensor,
        support_outputs: torch.Tensor,
        support_mask: torch.Tensor,
        query_inputs: torch.Tensor,
        stages: ModelStages = DEFAULT_STAGES,
    ) -> RLANOutput:
        sides, groups, lanes = self.canvas_plan(support_inputs, support_outputs, query_inputs)
        if lanes > 1:
            inputs = (support_inputs, support_outputs, support_mask, query_inputs)
            return self.forward_in_lanes(inputs, sides, groups, lanes, stages)
        support_maps = self.encode_support(support_inputs, support_outputs, support_mask, sides)
        lora = None
        if stages.hyperlora and self.hyper_lora is not None:
            lora = self.hyper_lora(support_maps, support_mask, stages.delta_scale)
        return self.forward_with_lora(query_inputs, support_maps, support_mask, lora, stages, sides)

    def canvas_plan(self, support_inputs, support_outputs, query_inputs):
        """(each sample's side, its canvas groups as forward computes them, the lanes they run in);
        (None, [], 1) without model.canvas_sides. bench/lane_balance.py reads the plan from here."""
        if self.config.canvas_sides is None:
            return None, [], 1
        sides = sample_sides(support_inputs, support_outputs, query_inputs)
        groups, lanes = plan_lanes(
            canvas_groups(canvas_for(sides, self.config.canvas_sides)), query_inputs.device
        )
        return sides, groups, lanes

    def forward_in_lanes(self, inputs, sides, groups, lanes, stages) -> RLANOutput:
        """`forward` with each canvas group's whole forward (support pairs, LoRA deltas, prediction) and
        backward side by side in `lanes` threads (rlan/model/lanes.py). Every part is per sample, so the
        groups' outputs, put back in batch order, are the batch's (to float rounding)."""
        side = inputs[-1].shape[-1]
        layouts: list[dict] = [{} for _ in groups]
        calls = [
            self._group_forward([x[g.index] for x in inputs], sides[g.index], g.side, stages, layout)
            for g, layout in zip(groups, layouts, strict=True)
        ]
        costs = [group_cost(g) for g in groups]
        results = run_groups(calls, costs, lanes, list(self.parameters()), random=self.training)
        parts, maps, deltas = [], [], []
        for result, layout in zip(results, layouts, strict=True):
            steps, lora_count = layout["steps"], layout["lora"]
            fields = dict(zip(LANE_FIELDS, result[steps : steps + len(LANE_FIELDS)], strict=True))
            parts.append(RLANOutput(result[steps - 1], list(result[:steps]), support_maps=None, **fields))
            maps.append(result[steps + len(LANE_FIELDS)])
            deltas.append(result[len(result) - lora_count :] if lora_count else ())
        inverse = batch_order(groups)
        support_maps = torch.cat(maps).index_select(0, inverse)
        lora = None
        if layouts[0]["lora"]:
            lora = joined_deltas(layouts[0]["template"], deltas, [len(g.index) for g in groups], inverse)
        return merge_canvas_groups(parts, groups, side, support_maps, inputs[2], lora)

    def _group_forward(self, inputs, sides, canvas: int, stages: ModelStages, layout: dict):
        """One canvas group's forward as a function of nothing but the parameters; `layout` records
        where its outputs are in the tuple it returns."""
        support_inputs, support_outputs, support_mask, query_inputs = inputs

        def call() -> tuple[torch.Tensor, ...]:
            maps = self.encode_support(support_inputs, support_outputs, support_mask, sides)
            lora = None
            if stages.hyperlora and self.hyper_lora is not None:
                lora = self.hyper_lora(maps, support_mask, stages.delta_scale)
            out = self.predict(fit_canvas(query_inputs, canvas, PAD), maps, support_mask, lora, stages)
            lora_part = () if lora is None else (*lora.tensors(), lora.reg_loss, lora.norm)
            layout.update(steps=len(out.all_logits), lora=len(lora_part), template=lora)
            return (*out.all_logits, *(getattr(out, f) for f in LANE_FIELDS), maps, *lora_part)

        return call

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
        sides: torch.Tensor | None = None,
    ) -> RLANOutput:
        """Predict query_inputs from given support maps and deltas (LOO holds a pair out via support_mask).

        Unlike the original's forward_with_lora, it takes the same staged path as forward (injection,
        DSC context, temperature), so the held-out prediction is made the way the main one is. With
        model.canvas_sides each sample is predicted on its own canvas, chosen from `sides` (B,; by default
        the query grid's side), and the outputs come back on the batch's canvas, zero past each canvas.
        """
        side = query_inputs.shape[-1]
        assert side <= MAX_GRID_SIDE, f"canvas side {side} > 30"
        if self.config.canvas_sides is None:
            return self.predict(query_inputs, support_maps, support_mask, lora, stages)
        sides = sample_sides(query_inputs) if sides is None else sides.to(query_inputs.device)
        groups = canvas_groups(canvas_for(sides, self.config.canvas_sides))
        if len(groups) == 1 and groups[0].side == side:
            return self.predict(query_inputs, support_maps, support_mask, lora, stages)
        parts = [
            self.predict(
                fit_canvas(query_inputs[g.index], g.side, PAD),
                support_maps[g.index],
                support_mask[g.index],
                None if lora is None else lora.rows(g.index),
                stages,
            )
            for g in groups
        ]
        return merge_canvas_groups(parts, groups, side, support_maps, support_mask, lora)

    def predict(
        self,
        query_inputs: torch.Tensor,
        support_maps: torch.Tensor,
        support_mask: torch.Tensor,
        lora: LoraDeltas | None,
        stages: ModelStages,
    ) -> RLANOutput:
        """The prediction of forward_with_lora on the canvas it is given."""
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


def batch_order(groups: list[CanvasGroup]) -> torch.Tensor:
    """The permutation that puts the groups' concatenated samples back in batch order."""
    return torch.argsort(torch.cat([g.index for g in groups]))


def merge_canvas_groups(
    parts: list[RLANOutput],
    groups: list[CanvasGroup],
    side: int,
    support_maps: torch.Tensor,
    support_mask: torch.Tensor,
    lora: LoraDeltas | None,
) -> RLANOutput:
    """The outputs of each canvas group back on the batch's side x side canvas, in batch order.

    Maps are cropped to it, or zero past a group's canvas (the losses and decoding read only each
    sample's own S x S); centroids are rescaled from the group's canvas units to the batch's.
    """
    inverse = batch_order(groups)

    def joined(tensors: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(tensors).index_select(0, inverse)

    def maps(get) -> torch.Tensor:
        return joined([fit_canvas(get(p), side) for p in parts])

    to_batch_units = [max(g.side - 1, 1) / max(side - 1, 1) for g in groups]
    all_logits = [maps(lambda p, t=t: p.all_logits[t]) for t in range(len(parts[0].all_logits))]
    return RLANOutput(
        logits=all_logits[-1],
        all_logits=all_logits,
        attention_maps=maps(lambda p: p.attention_maps),
        centroids=joined([p.centroids * scale for p, scale in zip(parts, to_batch_units, strict=True)]),
        stop_logits=joined([p.stop_logits for p in parts]),
        clues_used=joined([p.clues_used for p in parts]),
        confidences=joined([p.confidences for p in parts]),
        support_maps=support_maps,
        lora=lora,
        extras={"context": support_context(support_maps, support_mask)},
    )
