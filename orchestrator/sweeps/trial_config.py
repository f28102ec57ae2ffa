"""A trial's full run config: the base config, an ablation arm's overrides (if any), then the sampled knobs."""

from __future__ import annotations

from typing import Any

from rlan.config import RunConfig, apply_flat

ARM_KEY = "ablation.arm"  # a trial-config key naming an arm of orchestrator.ablation.run.ARMS
PBT_SOURCE = (
    "pbt_source"  # a PBT trial's result key: "<trial id>@<epoch>:<weights sum>" of the weights it copied
)

# The seed's six fixes as config overrides: (on, off). An ablation arm sets each one explicitly.
FIXES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "fix1_logit_clamp": ({"training.logit_clamp_max": 50.0}, {"training.logit_clamp_max": 0.0}),
    "fix2_meta_cap": (
        {"training.meta_escalation.meta_loss_cap_enabled": True},
        {"training.meta_escalation.meta_loss_cap_enabled": False},
    ),
    "fix3_output_equivariance": (
        {"training.output_equivariance_training.enabled": True},
        {"training.output_equivariance_training.enabled": False},
    ),
    "fix4_pool_context_simple": (
        {"training.equivariance_training.pooling": "simple"},
        {"training.equivariance_training.pooling": "d4"},
    ),
    "fix5_clue_variance": ({"training.clue_variance_weight": 1.0}, {"training.clue_variance_weight": 0.0}),
    "fix6_stop_saturation": (
        {"training.stop_saturation_weight": 0.5},
        {"training.stop_saturation_weight": 0.0},
    ),
}


def arm_overrides(arm: str) -> dict[str, Any]:
    """'all_on', 'all_off', or 'without_<fix>' (every fix on except that one)."""
    if arm == "all_on":
        off: set[str] = set()
    elif arm == "all_off":
        off = set(FIXES)
    elif arm.startswith("without_") and arm.removeprefix("without_") in FIXES:
        off = {arm.removeprefix("without_")}
    else:
        raise ValueError(f"unknown ablation arm '{arm}'")
    flat: dict[str, Any] = {}
    for fix, (on_values, off_values) in FIXES.items():
        flat.update(off_values if fix in off else on_values)
    return flat


ARMS = ["all_off", "all_on", *[f"without_{fix}" for fix in FIXES]]


def trial_config(base: RunConfig, knobs: dict[str, Any]) -> RunConfig:
    knobs = dict(knobs)
    arm = knobs.pop(ARM_KEY, None)
    flat = {**(arm_overrides(arm) if arm else {}), **knobs}
    return apply_flat(base, flat, "trial config")


def parse_source(text: str) -> tuple[str, int, float]:
    """(trial id, epoch, weights sum) from a PBT result's PBT_SOURCE value."""
    who, rest = text.split("@", 1)
    epoch, total = rest.split(":", 1)
    return who, int(epoch), float(total)
