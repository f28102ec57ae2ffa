"""Evaluation: predictions decoded with their own size, exact match, and a TTA vote over D4 x colour views.

Every view is built from the raw grids exactly like a training sample (same canvas rule, same padding),
so training and evaluation see the data the same way. A prediction is the argmax canvas cropped to the
sample's canvas and decoded with `decode_prediction` (its size comes from the OUTSIDE class); it is
then mapped back through the view's inverse transform and voted on as a grid.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from rlan.data import Augmentation, QuerySpec, collate_samples, decode_prediction, move_batch
from rlan.losses.stablemax import log_stablemax
from rlan.model import run_on_batch
from rlan.model.output import ModelStages

# (batch) -> (B, C, L, L) logits and (B, K, L, L) attention; the engine passes the model's forward.
Predictor = Callable[[dict], tuple[torch.Tensor, torch.Tensor | None]]


@dataclass
class QueryResult:
    spec: QuerySpec
    target: np.ndarray | None  # None for a test input whose output is not known (a submission)
    plain: np.ndarray  # prediction of the identity view
    ranked: list[tuple[bytes, np.ndarray, int]] = field(default_factory=list)  # (key, grid, votes)
    views: int = 1

    @property
    def exact(self) -> bool:
        return self.target is not None and same_grid(self.plain, self.target)

    def pass_at(self, k: int) -> bool:
        return self.target is not None and any(same_grid(grid, self.target) for _, grid, _ in self.ranked[:k])

    @property
    def consensus(self) -> float:
        return self.ranked[0][2] / self.views if self.ranked else 1.0


def same_grid(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool((a == b).all())


def _grid_key(grid: np.ndarray) -> bytes:
    return bytes(grid.shape) + grid.astype(np.int8).tobytes()


def attention_entropy(attention: torch.Tensor) -> torch.Tensor:
    """Per-sample mean over clues of the DSC attention entropy in nats (reference 7.4)."""
    a = attention.float().clamp_min(1e-6)
    return -(a * a.log()).flatten(2).sum(-1).mean(-1)


def true_output_nll(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) mean over each sample's S x S canvas of -ln stablemax(logits)[true class]: the cross-entropy
    of the true output canvas (its colours, and the OUTSIDE cells that give its size) under the model's
    own predictive distribution. No class weights, focal factor, clamp or regulariser: the predictions
    alone decide it. logits (B, C, L, L); targets and mask (B, L, L) as collated."""
    log_p = log_stablemax(logits.permute(0, 2, 3, 1), dim=-1, dtype=torch.float64)
    nll = -log_p.gather(-1, targets[..., None]).squeeze(-1)
    return torch.where(mask, nll, 0.0).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp(min=1)


def model_predictor(model: torch.nn.Module, stages: ModelStages) -> Predictor:
    def predict(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        out = run_on_batch(model, batch, stages)
        return out.logits, out.attention_maps

    return predict


@torch.no_grad()
def evaluate_queries(
    predict: Predictor,
    specs: Sequence[QuerySpec],
    views: Sequence[Augmentation],
    batch_size: int,
    device: torch.device | str = "cpu",
) -> tuple[list[QueryResult], dict[str, float]]:
    """Predict every query under every view, vote, and return per-query results plus summary metrics.

    views[0] must be the identity: it gives the plain (no-TTA) prediction.
    """
    assert views and views[0].is_identity, "the first view must be the identity"
    jobs = [(qi, vi) for qi in range(len(specs)) for vi in range(len(views))]
    jobs.sort(key=lambda j: specs[j[0]].canvas_size)  # similar canvases share a batch
    votes: list[Counter] = [Counter() for _ in specs]
    grids: list[dict[bytes, np.ndarray]] = [{} for _ in specs]
    plain: list[np.ndarray | None] = [None] * len(specs)
    pixel_hits = pixel_total = 0
    entropy_sum = nll_sum = 0.0
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        samples = [specs[q].build(views[v]) for q, v in chunk]
        batch = move_batch(collate_samples(samples), device)
        logits, attention = predict(batch)
        canvases = logits.argmax(1).cpu().numpy()
        plain_view = torch.tensor([v == 0 for _, v in chunk], device=logits.device)
        if plain_view.any():  # identity views only: the other views' NLL would be computed to be dropped
            rows = (
                logits[plain_view].float(),
                batch["query_targets"][plain_view],
                batch["target_mask"][plain_view],
            )
            nll_sum += float(true_output_nll(*rows).sum())
        if attention is not None:
            entropy_sum += float(attention_entropy(attention).sum())
        for (q, v), sample, canvas in zip(chunk, samples, canvases):
            s = sample.canvas_size
            grid = views[v].invert(decode_prediction(canvas[:s, :s]))
            key = _grid_key(grid)
            votes[q][key] += 1
            grids[q].setdefault(key, grid)
            if v == 0:
                plain[q] = grid
                target = sample.query_output
                if target is None:  # nothing to score against (a submission's unknown outputs)
                    continue
                h, w = min(target.shape[0], s), min(target.shape[1], s)
                pixel_hits += int((canvas[:h, :w] == target[:h, :w]).sum())
                pixel_total += target.size
    results = []
    for q, spec in enumerate(specs):
        ranked = [(key, grids[q][key], n) for key, n in votes[q].most_common()]
        results.append(QueryResult(spec, spec.build().query_output, plain[q], ranked, len(views)))
    n = max(len(results), 1)
    metrics = {
        "exact_match": sum(r.exact for r in results) / n,
        "pixel_accuracy": pixel_hits / max(pixel_total, 1),
        "entropy": entropy_sum / max(len(jobs), 1),
        "nll": nll_sum / n,
        "count": float(len(results)),
    }
    if len(views) > 1:
        metrics.update(
            {
                "tta_exact_match": sum(r.pass_at(1) for r in results) / n,
                "pass_at_2": sum(r.pass_at(2) for r in results) / n,
                "pass_at_3": sum(r.pass_at(3) for r in results) / n,
                "tta_consensus": sum(r.consensus for r in results) / n,
                "unique_predictions": sum(len(r.ranked) for r in results) / n,
            }
        )
    return results, metrics
