"""A sweep's MLflow parent run: opened once per sweep (re-attached when an earlier attempt left it without
Tune state), and closed with the sweep's counts and best value once Tune returns."""

from __future__ import annotations

import math
from typing import Any

from mlflow.tracking import MlflowClient

from orchestrator.sweeps.settings import SweepError, SweepSettings
from orchestrator.sweeps.study import public_url
from orchestrator.tracking.experiments import search_all_runs
from orchestrator.tracking.retries import with_retries
from orchestrator.tracking.run_logger import RunLogger
from orchestrator.tracking.uri import TrackingError, run_tags
from rlan.config import RunConfig


def earlier_parent(settings: SweepSettings) -> str | None:
    """The parent run that an earlier attempt of this sweep left in MLflow when it failed before Tune saved
    any state (run_sweep has checked there is none), so a rerun re-attaches instead of adding a second
    parent that `rlan compare` would pick. Refuses a name MLflow already holds for another sweep."""
    client = MlflowClient(settings.tracking_uri)
    where = {"what": "search_runs", "tracking_uri": settings.tracking_uri}
    experiment = with_retries(client.get_experiment_by_name, settings.experiment, **where)
    if experiment is None:
        return None
    query = f"tags.`rlan.sweep` = '{settings.name}'"
    runs = with_retries(client.search_runs, [experiment.experiment_id], query, max_results=1000, **where)
    parents = [r for r in runs if r.data.tags.get("rlan.role") == "sweep"]
    trials = sum(r.data.tags.get("rlan.role") == "trial" for r in runs)
    if not parents:
        return None
    parent = parents[0]
    storage = parent.data.tags.get("rlan.storage", "?")
    if len(parents) > 1 or storage != settings.sweep_dir or trials:
        raise SweepError(
            f"MLflow experiment '{settings.experiment}' already holds sweep '{settings.name}' (parent run "
            f"{parent.info.run_id}, storage {storage}, {trials} trial runs), and {settings.sweep_dir} has no "
            f"Tune state to resume it from; pick another --name"
        )
    return parent.info.run_id


def start_parent_run(base: RunConfig, settings: SweepSettings) -> str:
    tags = run_tags(
        base,
        {
            "rlan.command": "sweep",
            "rlan.sweep": settings.name,
            "rlan.role": "sweep",
            "rlan.metric": settings.metric,
            "rlan.mode": settings.mode,
            "rlan.search_space_file": settings.search_space_file,
            "rlan.search_space": settings.search_space_text,
            "rlan.storage": settings.sweep_dir,
            "rlan.study_storage": public_url(settings.study_storage),  # "" when the study was in memory
        },
    )
    existing = earlier_parent(settings)
    parent = RunLogger(
        settings.tracking_uri, settings.experiment, run_name=settings.name, tags=tags, run_id=existing
    )
    try:
        parent.log_params(base.to_flat_dict())
    except TrackingError as exc:  # only a re-attached parent can hold other values
        raise SweepError(
            f"sweep '{settings.name}': its parent run {existing} was started with another base config "
            f"({exc}); pick another --name"
        ) from None
    if existing and settings.echo:
        print(f"[rlan] sweep '{settings.name}': re-attached to its parent run {existing}", flush=True)
    if settings.search_space_text:
        parent.log_text(settings.search_space_text, "search_space.yaml")
    parent.log_text(base.to_yaml(), "config/base_config.yaml")
    return parent.run_id


def trial_states(parent: RunLogger, settings: SweepSettings) -> list[str] | None:
    """The status of every trial run of the sweep (every part's); None when MLflow cannot say."""
    try:
        query = f"tags.`rlan.sweep` = '{settings.name}' and tags.`rlan.role` = 'trial'"
        return [run.info.status for run in search_all_runs(parent.client, [parent.experiment_id], query)]
    except Exception:
        return None


def count_unfinished(
    parent: RunLogger, settings: SweepSettings, results, planned: int | None = None, states=()
) -> int:
    """Trials of the sweep (`planned`: every part's, default this part's) not yet run to their end. After
    Ctrl-C Tune stops gracefully and returns as if done: it marks the trials it stopped TERMINATED and never
    creates the rest. Our own record is exact: every trial that ended has a child run no longer RUNNING
    (`states`: trial_states, when the caller has read them already)."""
    planned = planned or settings.trials
    states = trial_states(parent, settings) if states == () else states
    if states is None:  # MLflow unreachable at the very end: Tune's count, blind to an interruption
        return max(0, settings.trials - results.num_terminated - results.num_errors)
    return max(0, planned - sum(state != "RUNNING" for state in states))


def finish_parent(results, settings: SweepSettings, planned: int | None = None) -> dict[str, Any]:
    """Close the parent run; a summary of this part (the sweep, or one extension) with its ResultGrid under
    'results'. The parent's tags count the whole sweep (`planned` trials) and keep its best value."""
    parent = RunLogger(settings.tracking_uri, settings.experiment, run_id=settings.parent_run_id)
    errors = len(results.errors)
    finished = len(results) - errors
    states = trial_states(parent, settings)
    unfinished = count_unfinished(parent, settings, results, planned, states)
    summary: dict[str, Any] = {
        "trials": len(results),
        "errors": errors,
        "unfinished": unfinished,
        "results": results,
    }
    parent.set_tags(
        {
            "rlan.trials": str((planned or settings.trials) - unfinished),
            "rlan.trial_errors": str(errors if states is None else states.count("FAILED")),
            "rlan.trials_unfinished": str(unfinished),
        }
    )
    try:
        best = results.get_best_result(settings.metric, settings.mode)
        value = best.metrics.get(settings.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            summary["best"] = {"metric": value, "knobs": best.config}
            earlier = with_retries(parent.client.get_run, parent.run_id, what="get_run").data.metrics
            before = earlier.get(f"best/{settings.metric}")  # an earlier part's
            better = max if settings.mode == "max" else min
            value = value if before is None else better(value, before)
            parent.log_metrics({f"best/{settings.metric}": value}, step=0)
    except RuntimeError:
        pass  # no trial reported the metric
    parent.end("KILLED" if unfinished else "FINISHED" if finished else "FAILED")  # resume re-opens it
    return summary
