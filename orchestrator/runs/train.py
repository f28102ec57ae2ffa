"""`rlan train`: one RLAN run on Ray Train workers (DDP over gloo or nccl), logged to MLflow by the driver side.

The workers (orchestrator/runs/train_worker.py) run the framework-free engine and only call
`ray.train.report`; they never touch MLflow. The Train controller (on the driver's node) logs each report
through `MlflowTrainCallback`; the driver creates the MLflow run, prints one line per epoch by polling it,
and logs the artifacts at the end (all three through orchestrator/tracking/recorder.py;
orchestrator/runs/train_tracking.py holds the MLflow half).

Resume: Ray Train V2 resumes a run when (storage_path, name) is reused (the checkpoint manager loads
`<storage>/<name>/` and `ray.train.get_checkpoint()` returns the latest checkpoint). The default name is
deterministic, so re-running the same command continues where it stopped, in the same MLflow run.
"""

from __future__ import annotations

from contextlib import nullcontext

import ray.train

from orchestrator.cluster import join_cluster, resolve_storage
from orchestrator.runs.train_tracking import (
    EpochPrinter,
    MlflowTrainCallback,
    default_train_name,
    open_train_run,
)
from orchestrator.runs.trainer import build_torch_trainer
from orchestrator.tracking.artifacts import summary_table
from orchestrator.tracking.recorder import ERROR_TAG
from rlan.config import RunConfig, with_absolute_paths


def failure_line(error: BaseException) -> str:
    """A TrainingFailedError as one line: the first failed worker's exception type and first line."""
    failures = getattr(error, "worker_failures", None) or {}
    if not failures:
        return _one_line(getattr(error, "controller_failure", error))
    rank = min(failures)
    return f"worker {rank}: " + _one_line(
        getattr(failures[rank], "_base_exc", failures[rank])
    )  # unwrap Ray's


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


# ------------------------------------------------------------------------------------------ rlan train
def run_train(
    config: RunConfig,
    *,
    tracking_uri: str,
    experiment: str | None = None,
    workers: int = 1,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    address: str | None = None,
    storage: str | None = None,
    name: str | None = None,
    max_failures: int = 2,
    log_checkpoint: bool = True,
    echo: bool = True,
    wait_for_resources: float = 0.0,
) -> tuple[str, dict[str, float]]:
    """Train on `workers` Ray Train workers; returns (MLflow run id, last epoch's metrics).

    ClusterError, ConfigError and TrackingError propagate as they are; a training failure becomes a
    RuntimeError of one line, and the MLflow run ends FAILED with that line as tag `rlan.error`.
    """
    config = with_absolute_paths(config)
    experiment = experiment or config.logging.experiment_name
    name = name or default_train_name(config, experiment)
    storage = resolve_storage(storage)  # before Ray starts: a bad path costs nothing
    join_cluster(
        address, storage, workers, cpus_per_worker, gpus_per_worker, wait_for_resources, what="the run"
    )
    recorder = open_train_run(config, tracking_uri, experiment, name, storage)
    recorder.logger.set_tags(
        {
            "rlan.workers": workers,
            "rlan.cpus_per_worker": cpus_per_worker,
            "rlan.gpus_per_worker": gpus_per_worker,
        }
    )
    callback = MlflowTrainCallback(
        recorder.tracking_uri, recorder.run_id, train_folder=f"{storage.rstrip('/')}/{name}", storage=storage
    )
    trainer = build_torch_trainer(
        config, name=name, storage=storage, workers=workers, use_gpu=gpus_per_worker > 0,
        cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker or None, max_failures=max_failures,
        callbacks=[callback],
    )  # fmt: skip
    printer = EpochPrinter(recorder, config.training.max_epochs, recorder.last_step)
    with recorder:  # ends FINISHED, or FAILED (KILLED on Ctrl-C) when anything below raises
        if echo:
            printer.start()
        try:
            result = trainer.fit()
        except ray.train.TrainingFailedError as exc:
            recorder.logger.set_tags({ERROR_TAG: failure_line(exc)})
            raise RuntimeError(failure_line(exc)) from None
        except BaseException as exc:
            recorder.logger.set_tags({ERROR_TAG: _one_line(exc)})
            raise
        finally:
            if echo:
                printer.stop()
        metrics = {k: float(v) for k, v in (result.metrics or {}).items() if isinstance(v, int | float)}
        # The epochs went through the controller's recorder: this one reads the curves back from the run.
        with result.checkpoint.as_directory() if result.checkpoint else nullcontext() as directory:
            recorder.log_end_artifacts(directory, log_checkpoint=log_checkpoint)
    if echo:
        print(summary_table(metrics))
    return recorder.run_id, metrics
