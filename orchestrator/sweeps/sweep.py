"""Ray Tune sweeps: Optuna TPE proposes knob values, ASHA stops weak trials, each trial is a Ray Train run.

Under Ray Train V2 a trial is a small function trainable (the *trial driver*) that launches a TorchTrainer
whose TuneReportCallback forwards the workers' per-epoch reports to Tune. The driver holds a token CPU
only; the Train workers hold the real resources. Trial Train runs are named after the trial id, so a
restarted or resumed trial continues from its own Train snapshot.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.stopper import Stopper

from orchestrator.sweeps.callback import MlflowSweepCallback, is_unhealthy, refusal_in
from orchestrator.sweeps.parent import count_unfinished, earlier_parent, finish_parent, start_parent_run  # noqa: F401
from orchestrator.sweeps.schedulers import make_any_scheduler
from orchestrator.sweeps.search_space import SearchSpace
from orchestrator.sweeps.settings import (  # noqa: F401  (re-exported: where sweeps were always imported from)
    SWEEP_FILE,
    SweepError,
    SweepSettings,
    read_sweep_file,
    write_sweep_file,
)
from orchestrator.sweeps.study import make_searcher
from orchestrator.sweeps.trial_driver import trial_driver
from orchestrator.tracking.retries import with_retries
from orchestrator.tracking.run_logger import RunLogger
from orchestrator.tracking.uri import TrackingRefused
from rlan.config import RunConfig

# The trial driver only waits on its Train run, so it must not hold CPU: at 0.01 CPU, two trials of one
# 1-CPU worker each needed 2.02 of a 2-CPU machine's 2 and ran one at a time (the second driver idled).
# Tune refuses an empty request, so it asks for one byte of `memory`, a resource every Ray node has.
DRIVER_RESOURCES = {"CPU": 0, "memory": 1}
# Each trial runs in a fresh trial process. Reusing a finished trial's process would save ~3 s per trial,
# but Tune's stop (ASHA, a stopper) does not end that trial's Ray Train run: the reused process must wait
# for it, Tune gives up after 2 s and fails the next trial ("Could not re-use actor"), as a clean-clone CI
# run did when ASHA stopped a trial at its last rung.
REUSE_ACTORS = False


class HealthStopper(Stopper):
    """Stops a trial whose NaN batches reach training.nan_batches_abort or whose loss is non-finite."""

    def __init__(self, nan_batches_abort: int):
        self.nan_batches_abort = nan_batches_abort

    def __call__(self, trial_id: str, result: dict) -> bool:
        return is_unhealthy(result, self.nan_batches_abort)

    def stop_all(self) -> bool:
        return False


def make_trainable(base: RunConfig, settings: SweepSettings):
    if settings.scheduler == "pbt":  # PBT copies trials through Tune checkpoints: no Ray Train run (pbt.py)
        from orchestrator.sweeps.pbt import make_pbt_trainable

        return make_pbt_trainable(base, settings)
    trainable = tune.with_parameters(trial_driver, base_config=base, settings=settings)
    return tune.with_resources(trainable, DRIVER_RESOURCES)


def allow_unevaluated_epochs(base: RunConfig) -> None:
    """With evaluation every N epochs the results in between have no objective. ASHA records each rung at
    the first evaluated epoch at or after it (the same epoch for every trial) and the searcher skips
    them, but Tune's strict check would reject the first such result; it reads this variable per result."""
    if base.evaluation.eval_every > 1:
        os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"


def make_run_config(base: RunConfig, settings: SweepSettings) -> tune.RunConfig:
    callback = MlflowSweepCallback(
        settings.tracking_uri,
        settings.experiment,
        settings.name,
        settings.parent_run_id,
        base,
        settings.metric,
        base.training.nan_batches_abort,
        settings.log_checkpoints,
        settings.echo,
        settings.storage,
        train_root=f"{settings.sweep_dir}/train",  # as trial_driver's Train runs
    )
    reporter = tune.CLIReporter(
        metric_columns={"epoch": "epoch", settings.metric: settings.metric, "train/loss": "loss"},
        parameter_columns=settings.knobs,
        max_report_frequency=30,
    )
    storage_path, name = settings.tune_location
    return tune.RunConfig(
        name=name,
        storage_path=storage_path,
        # Tune's CSV and JSON results stay (ResultGrid reads them); its TensorBoard files go (fit_tuner says why).
        callbacks=[callback, CSVLoggerCallback(), JsonLoggerCallback()],
        stop=HealthStopper(base.training.nan_batches_abort),
        failure_config=tune.FailureConfig(max_failures=settings.max_failures),
        progress_reporter=reporter,
        verbose=1 if settings.echo else 0,
    )


def fit_tuner(tuner: tune.Tuner, settings: SweepSettings):
    """tuner.fit(); a sweep aborted because MLflow refused its requests ends in one line that says so."""
    # MLflow is this project's viewer; Tune's TensorBoard writer took a tenth of the driver's loop at scale
    # (docs/performance.md (e)). The variable stops Tune adding its default loggers; run_config passes two back.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    try:
        return tuner.fit()
    except Exception as exc:
        refused = refusal_in(exc)
        if refused is None:
            raise
        hint = f"`rlan resume {settings.name}` continues the sweep once that is fixed"
        raise TrackingRefused(f"{refused}; {hint}") from None


def run_sweep(
    base: RunConfig,
    space: SearchSpace | None,
    settings: SweepSettings,
    grid: dict | None = None,
    trainable=None,
) -> dict[str, Any]:
    """A new sweep: Optuna over `space`, or every combination of `grid` ({key: [values]}, e.g. an ablation).

    The caller has started Ray and resolved storage and tracking. `trainable` replaces the Ray Train trial
    (the scale benchmark's stand-in, bench/scale.py); everything else is the sweep's own.
    """
    if tune.Tuner.can_restore(settings.sweep_dir):
        raise SweepError(
            f"sweep '{settings.name}' already exists in {settings.storage}: "
            f"`rlan resume {settings.name}` continues it, or pick another --name"
        )
    settings.knobs = sorted(grid) if grid else sorted(space.knobs)
    if grid:
        settings.trials = math.prod(len(values) for values in grid.values())  # every grid point, once
    settings.parent_run_id = start_parent_run(base, settings)
    write_sweep_file(settings, base)
    allow_unevaluated_epochs(base)
    if grid:
        tune_config = tune.TuneConfig(
            metric=settings.metric,
            mode=settings.mode,
            num_samples=1,
            max_concurrent_trials=settings.concurrency,
            scheduler=make_any_scheduler(base, space, settings, grid),
            reuse_actors=REUSE_ACTORS,
        )
        tuner = tune.Tuner(
            trainable or make_trainable(base, settings),
            tune_config=tune_config,
            run_config=make_run_config(base, settings),
            param_space={k: tune.grid_search(v) for k, v in grid.items()},
        )
    else:
        tuner = search_tuner(base, space, settings, trainable)
    return finish_parent(fit_tuner(tuner, settings), settings)


def search_tuner(base: RunConfig, space: SearchSpace, settings: SweepSettings, trainable=None) -> tune.Tuner:
    """A Tuner over the search space (the sweep, or one of its extensions): Optuna proposes each trial, or,
    under PBT, the population is drawn at random and PBT moves its weak members (Optuna takes no part)."""
    pbt = settings.scheduler == "pbt"
    tune_config = tune.TuneConfig(
        metric=settings.metric,
        mode=settings.mode,
        num_samples=settings.trials,
        max_concurrent_trials=settings.concurrency,
        search_alg=None if pbt else make_searcher(space, base, settings),
        scheduler=make_any_scheduler(base, space, settings),
        reuse_actors=REUSE_ACTORS,
    )
    if pbt:
        from ray.tune.search.basic_variant import BasicVariantGenerator

        from orchestrator.sweeps.pbt import param_space

        tune_config.search_alg = BasicVariantGenerator(random_state=settings.seed)
    return tune.Tuner(
        trainable or make_trainable(base, settings),
        tune_config=tune_config,
        run_config=make_run_config(base, settings),
        **({"param_space": param_space(space)} if pbt else {}),
    )


def resume_sweep(sweep_dir: str) -> tuple[SweepSettings, dict[str, Any]]:
    """Finish an interrupted sweep: unfinished and errored trials continue, nothing is run twice. A sweep that
    was extended resumes part by part (a finished part returns at once); the summary counts them all."""
    root, _ = read_sweep_file(sweep_dir)
    if not tune.Tuner.can_restore(sweep_dir):
        raise SweepError(f"{sweep_dir}: the sweep has no saved Tune state to resume")
    parts = [sweep_dir] + [f"{sweep_dir}/extend-{k}" for k in range(1, len(root.extended_by) + 1)]
    totals = {"trials": 0, "errors": 0}
    for part in parts:
        if not tune.Tuner.can_restore(part):  # an extension stopped before Tune saved anything
            continue
        settings, base = read_sweep_file(part)
        RunLogger(settings.tracking_uri, settings.experiment, run_id=settings.parent_run_id)  # RUNNING again
        allow_unevaluated_epochs(base)
        tuner = tune.Tuner.restore(
            part, make_trainable(base, settings), resume_unfinished=True, resume_errored=True
        )
        summary = finish_parent(fit_tuner(tuner, settings), settings, root.planned_trials)
        totals = {k: totals[k] + summary[k] for k in totals}
    return root, {**summary, **totals}


def retarget_sweep(sweep_dir: str, tracking_uri: str) -> None:
    """Point a sweep at MLflow's new address (`rlan resume --tracking-uri`): the sweep files (the root's and
    each extension's) are where the resumed drivers and their MLflow callbacks read it from. The sweep's
    parent run must be found there."""
    settings, _ = read_sweep_file(sweep_dir)
    if tracking_uri == settings.tracking_uri:
        return
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        with_retries(client.get_run, settings.parent_run_id, what="get_run", tracking_uri=tracking_uri)
    except MlflowException:
        raise SweepError(
            f"--tracking-uri {tracking_uri}: the sweep's parent run {settings.parent_run_id} is not there "
            f"(the sweep logged to {settings.tracking_uri})"
        ) from None
    for k in range(len(settings.extended_by) + 1):
        part, part_base = read_sweep_file(f"{sweep_dir}/extend-{k}" if k else sweep_dir)
        part.tracking_uri = tracking_uri
        write_sweep_file(part, part_base)


def locate_sweep(name_or_path: str, storage: str) -> str:
    """A sweep folder from a path, or from a name under the storage root."""
    for candidate in (name_or_path, f"{storage.rstrip('/')}/{name_or_path}"):
        if "://" in candidate or Path(candidate).is_dir():
            if tune.Tuner.can_restore(candidate):
                return candidate
    raise SweepError(f"no sweep '{name_or_path}' found (looked for it as a path and under {storage})")


def sweep_name(config: RunConfig, given: str | None) -> str:
    """--name, else the experiment name and the start time (printed, for `rlan resume`)."""
    if given:
        return given
    from datetime import datetime

    return f"{config.logging.experiment_name}-{datetime.now():%Y%m%d-%H%M%S}"
