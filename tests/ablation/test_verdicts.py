import math

import pytest

from orchestrator.ablation.report import (
    EXPECTATIONS,
    REPORTED,
    Spread,
    judge,
    markdown,
    reduce_series,
    spread,
    summarize,
    verdicts,
)
from orchestrator.sweeps.trial_config import ARMS, FIXES, arm_overrides, trial_config
from tests.conftest import tiny

BY_FIX = {e.fix: e for e in EXPECTATIONS}


@pytest.mark.parametrize(
    ("fix", "on", "off", "observed", "note"),
    [
        ("fix1_logit_clamp", Spread(0, 0, 2), Spread(3, 1, 2), True, "absent without the fix"),
        ("fix1_logit_clamp", Spread(0, 0, 2), Spread(0, 0, 2), True, "identical with and without"),
        ("fix2_meta_cap", Spread(0.2, 0.01, 2), Spread(0.22, 0.01, 2), True, "shows it too"),
        ("fix1_logit_clamp", Spread(2, 0, 2), Spread(3, 0, 2), False, "not observed"),
        ("fix2_meta_cap", Spread(0.2, 0.01, 2), Spread(0.4, 0.02, 2), True, "absent without the fix"),
        ("fix2_meta_cap", Spread(0.3, 0.01, 2), Spread(0.4, 0.02, 2), False, "not observed"),
        ("fix4_pool_context_simple", Spread(0.01, 0.001, 2), Spread(1e-9, 0, 2), True, "absent without"),
        ("fix4_pool_context_simple", Spread(5e-5, 0, 2), Spread(0, 0, 2), False, "not observed"),
        ("fix5_clue_variance", Spread(0.5, 0.05, 2), Spread(0.1, 0.05, 2), True, "absent without the fix"),
        ("fix5_clue_variance", Spread(0.12, 0.05, 2), Spread(0.1, 0.05, 2), True, "inside the seed-to-seed"),
        ("fix6_stop_saturation", Spread(0.3, 0, 2), Spread(0.1, 0, 2), False, "not observed"),
    ],
)
def test_verdicts_on_constructed_numbers(fix, on, off, observed, note):
    verdict = judge(BY_FIX[fix], on, off)
    assert verdict.observed is observed
    assert note in verdict.note


def test_a_single_seed_never_claims_the_spread():
    verdict = judge(BY_FIX["fix5_clue_variance"], Spread(0.11, 0, 1), Spread(0.1, 0, 1))
    assert verdict.observed and not verdict.within_spread


def test_missing_numbers_are_not_observed():
    assert not judge(
        BY_FIX["fix3_output_equivariance"], Spread(math.nan, math.nan, 0), Spread(0, 0, 1)
    ).observed


def test_series_reductions_and_spread():
    assert reduce_series([1, 0, 2], "sum") == 3
    assert reduce_series([0.0, 0.0, 0.2, 0.4], "active_mean") == pytest.approx(0.3)
    assert reduce_series([0.0, 0.0], "active_mean") == 0.0
    assert reduce_series([3, 1, 2], "last") == 2 and reduce_series([3, 1, 2], "min") == 1
    assert math.isnan(reduce_series([], "max"))
    s = spread([1.0, 3.0])
    assert (s.mean, round(s.std, 6), s.n) == (2.0, round(math.sqrt(2), 6), 2)


def test_every_arm_sets_all_six_fixes_and_differs_where_it_should():
    on = arm_overrides("all_on")
    for arm in ARMS:
        flat = arm_overrides(arm)
        assert set(flat) == {k for on_values, _ in FIXES.values() for k in on_values}
        changed = {k for k in flat if flat[k] != on[k]}
        expected = {"all_on": 0, "all_off": len(FIXES)}.get(arm, 1)
        assert len(changed) == expected, arm
    config = trial_config(tiny(), {"ablation.arm": "without_fix4_pool_context_simple", "training.seed": 7})
    assert config.training.equivariance_training.pooling == "d4" and config.training.seed == 7
    assert config.model.hyperlora_pooling == "simple"  # the "without fix 4" arm trains the same model
    assert config.training.logit_clamp_max == 50.0
    with pytest.raises(ValueError, match="unknown ablation arm"):
        arm_overrides("fix7")


def test_report_lists_every_verdict_and_diagnostic():
    rows = {
        "nan_batches": 0.0,
        "meta_share_max": 0.1,
        "output_equiv_loss": 0.01,
        "context_equiv_loss": 0.02,
        "clues_std": 0.3,
        "stop_saturated_share": 0.0,
        "tta_consensus": 0.5,
    }
    trials = {arm: [dict.fromkeys(REPORTED, 1.0) | rows] for arm in ARMS}
    summary = summarize(trials)
    found = verdicts(summary)
    assert len(found) == 9  # six fixes (fix 1 twice) + the overall TTA consensus and score claims
    text = markdown(summary, found, "# test")
    for e in EXPECTATIONS:
        assert e.fix in text and e.claim in text
    for name in REPORTED:
        assert f"| {name} |" in text
    assert text.count("\n| ") >= 9 + len(REPORTED)


def test_the_clamp_is_judged_on_the_larger_logit_magnitude():
    from orchestrator.ablation.report import DERIVED

    assert DERIVED["logit_abs_max"]({"logit_min": -99.9, "logit_max": 47.0}) == pytest.approx(99.9)
    assert DERIVED["logit_abs_max"]({"logit_min": -3.0, "logit_max": 61.8}) == pytest.approx(61.8)
    assert math.isnan(DERIVED["logit_abs_max"]({"logit_min": math.nan, "logit_max": 5.0}))
    clamp = next(e for e in EXPECTATIONS if e.diagnostic == "logit_abs_max")
    assert judge(clamp, Spread(50.5, 0.2, 3), Spread(75.0, 10.0, 3)).note.endswith("absent without the fix")
