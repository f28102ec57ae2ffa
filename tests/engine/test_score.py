"""The default sweep objective reads held-out predictions only (rlan.diagnostics.selection_score)."""

import math

import pytest
import torch

from rlan import engine
from rlan.diagnostics import SCORE_TIE_WEIGHT, selection_score
from rlan.schedule import stages_at
from tests.conftest import tiny


def test_exact_match_first_then_heldout_nll_and_never_the_training_loss():
    def score(exact, nll, train_loss, **extra):
        return selection_score(
            {"heldout/exact_match": exact, "heldout/nll": nll, "train/loss": train_loss, **extra}
        )

    # Better held-out predictions with a worse training loss score higher.
    assert score(0.0, 0.8, train_loss=9.0) > score(0.0, 1.2, train_loss=0.1)
    # The training loss, and the regulariser terms inside it, change nothing.
    assert score(0.1, 1.0, 0.1) == score(0.1, 1.0, 50.0, **{"train/clue_variance_loss": 3.0})
    # One more solved query out of 1000 outweighs any held-out NLL gap.
    assert score(0.001, 50.0, 0.0) > score(0.0, 1e-6, 0.0)  # stablemax never gives p = 1: nll > 0
    assert score(0.25, 0.5, 1.0) == pytest.approx(0.25 + SCORE_TIE_WEIGHT * math.exp(-0.5))
    # Without a held-out set, the eval pair; before any evaluation, nothing.
    assert (
        selection_score({"eval/exact_match": 0.5, "eval/nll": 0.0, "train/loss": 1.0})
        == 0.5 + SCORE_TIE_WEIGHT
    )
    assert selection_score({"train/loss": 0.1}) is None
    assert score(0.5, float("nan"), 1.0) == 0.5  # a broken NLL adds nothing, never NaN


def test_identical_heldout_predictions_score_the_same_whatever_the_regulariser_weights():
    # A high target std and a low threshold, so both regularisers are active; their weights differ 10x.
    common = ["training.clue_target_variance=3.0", "training.stop_saturation_threshold=0.05"]
    small = engine.build(
        tiny(*common, "training.clue_variance_weight=0.1", "training.stop_saturation_weight=0.05")
    )
    large = engine.build(
        tiny(*common, "training.clue_variance_weight=1.0", "training.stop_saturation_weight=0.5")
    )
    stages = stages_at(small.config, 0)
    start = {k: v.clone() for k, v in small.core.state_dict().items()}
    assert all(torch.equal(v, large.core.state_dict()[k]) for k, v in start.items())
    small_train, large_train = engine.train_epoch(small, 0, stages), engine.train_epoch(large, 0, stages)
    assert large_train["train/loss"] > small_train["train/loss"] + 0.1
    for state in (small, large):  # the same weights, hence the same held-out predictions
        state.core.load_state_dict(start)
    small_eval, large_eval = (
        engine.evaluate(small, stages, small_train),
        engine.evaluate(large, stages, large_train),
    )
    assert small_eval["heldout/nll"] == large_eval["heldout/nll"] > 0
    assert small_eval["score"] == large_eval["score"]
