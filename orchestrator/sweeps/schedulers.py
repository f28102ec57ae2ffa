"""Which trials go on: FIFO (all), ASHA (stops weak trials at rungs) or PBT (the weak copy the strong and
perturb; orchestrator/sweeps/pbt.py); the epoch counter is every scheduler's clock."""

from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from orchestrator.sweeps.search_space import SearchSpace
from orchestrator.sweeps.settings import SweepSettings
from rlan.config import RunConfig

BUDGET_KEY = "training.max_epochs"


def largest_budget(base: RunConfig, space: SearchSpace | None, grid: dict | None = None) -> int:
    """The most epochs any trial can train: the largest value the space or grid allows for
    training.max_epochs when it is swept (every trial, the baseline too, takes one of those), else the base."""
    if space is not None and BUDGET_KEY in space.knobs:
        knob = space.knobs[BUDGET_KEY]
        return int(max(knob.values) if knob.type == "choice" else knob.high)
    if grid and BUDGET_KEY in grid:
        return int(max(grid[BUDGET_KEY]))
    return base.training.max_epochs


def make_scheduler(base: RunConfig, settings: SweepSettings, max_t: int | None = None):
    """FIFO, or ASHA up to max_t epochs (default the base budget; a swept budget passes its largest value:
    a trial with a smaller budget completes at its own last epoch, below the top rung)."""
    if settings.scheduler == "fifo":
        return FIFOScheduler()
    # The epoch counter (not training_iteration) is ASHA's clock: it survives a resume unchanged.
    # The first rung waits a quarter of the budget: at epoch 1 every trial's held-out score is ~0 and
    # their order is noise, so a grace period of 1 stopped trials on nothing (docs/learning.md).
    max_t = max_t or base.training.max_epochs
    grace = settings.grace_period or max(1, max_t // 4)
    return ASHAScheduler(time_attr="epoch", max_t=max_t, grace_period=min(grace, max_t), reduction_factor=2)


def make_any_scheduler(base: RunConfig, space: SearchSpace | None, settings: SweepSettings, grid=None):
    """The scheduler --scheduler names, sized for the largest budget any trial can have."""
    if settings.scheduler == "pbt":
        from orchestrator.sweeps.pbt import make_pbt_scheduler

        return make_pbt_scheduler(space, base, settings)
    return make_scheduler(base, settings, largest_budget(base, space, grid))
