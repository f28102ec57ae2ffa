"""`rlan train`: one RLAN run on Ray Train workers (DDP over gloo or nccl), logged to MLflow by the driver side.

The workers run the framework-free engine and only call `ray.train.report`; they never touch MLflow. The
Train controller (on the driver's node) logs each report through `MlflowTrainCallback`; the driver creates
the MLflow run, prints one line per epoch by polling it, and logs the artifacts at the end (all three through
orchestrator/tracking/recorder.py; orchestrator/runs/train_tracking.py holds the MLflow half).

Resume: Ray Train V2 resumes a run when (storage_path, name) is reused (the checkpoint manager loads
`<storage>/<name>/` and `ray.train.get_checkpoint()` returns the latest checkpoint). The default name is
deterministic, so re-running the same command continues where it stopped, in the same MLflow run.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any

import ray.train
import ray.train.torch
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from orchestrator.cluster import join_cluster, resolve_storage
from orchestrator.runs.train_tracking import (
    EpochPrinter,
    MlflowTrainCallback,
    default_train_name,
    open_train_run,
)
from orchestrator.tracking.artifacts import render_final_plots, summary_table
from orchestrator.tracking.recorder import ERROR_TAG
from rlan import engine
from rlan.config import RunConfig, with_absolute_paths
from rlan.engine import TrainState

# Ray Train ranks checkpoints by this key when a sweep keeps its best ones: the sweep metric on evaluated
# epochs, the worst value otherwise. Ray logs an error for every report that lacks the key, and an epoch
# that did not evaluate (eval_every > 1) has no score, so the key is always there.
CHECKPOINT_RANK = "checkpoint_rank"


# ------------------------------------------------------------------------------------------ workers
class RayReporter:
    """The engine's Reporter inside a Train worker; every rank calls report once per epoch (it is a barrier)."""

    def __init__(self, world_size: int, rank_by: tuple[str, str] | None = None):
        self.world_size, self.rank_by = world_size, rank_by
        self.state: TrainState | None = None  # set once built, for the final plots

    def rank(self, metrics: dict[str, float]) -> dict[str, float]:
        """{CHECKPOINT_RANK: the sweep metric, or the worst value on an epoch without it}; {} if not ranked."""
        if self.rank_by is None:
            return {}
        metric, mode = self.rank_by
        value = metrics.get(metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            value = -math.inf if mode == "max" else math.inf
        return {CHECKPOINT_RANK: float(value)}

    def report(self, epoch: int, metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        state = self.state
        if checkpoint_dir and state is not None and epoch + 1 == state.config.training.max_epochs:
            render_final_plots(state, checkpoint_dir)
        checkpoint = Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None  # rank 0 only
        report = {**metrics, **self.rank(metrics), "world_size": float(self.world_size)}
        ray.train.report(report, checkpoint=checkpoint)


def wrap_ddp(model: torch.nn.Module) -> torch.nn.Module:
    """DDP over Ray's process group; staged modules (HyperLoRA, solver steps) leave parameters unused."""
    return ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})


def worker_state(loop_config: dict[str, Any]) -> tuple[TrainState, RayReporter]:
    """The engine's state on this Train worker, resumed from Ray's latest checkpoint when there is one.

    loop_config = {"config": RunConfig, "rank_by": (metric, mode) or None}: Ray pickles it to the workers,
    so the config arrives as the typed object it left as; the engine shards the data itself.
    """
    config: RunConfig = loop_config["config"]
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    rank_by = loop_config.get("rank_by")
    reporter = RayReporter(world_size, tuple(rank_by) if rank_by else None)
    state = engine.build(
        config,
        device=ray.train.torch.get_device(),
        rank=rank,
        world_size=world_size,
        wrap_model=wrap_ddp if world_size > 1 else None,
    )
    reporter.state = state
    checkpoint = ray.train.get_checkpoint()  # every rank gets it and loads the same state
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            engine.resume(state, directory)
    return state, reporter


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Runs on every worker; reports once per epoch on every rank.

    A run resumed after its last epoch was checkpointed (a sweep stopped between that checkpoint and Tune
    or MLflow taking the epoch's report) reports that epoch again, so that the trial ends "completed" with
    its score rather than with no result; the MLflow callbacks skip an epoch they already logged."""
    state, reporter = worker_state(loop_config)
    if state.epoch >= state.config.training.max_epochs and state.last_metrics:
        reporter.report(state.epoch - 1, state.last_metrics, None)
    else:
        progress = bool(loop_config.get("progress")) and state.rank == 0
        engine.fit(state, reporter, progress=progress)


def build_torch_trainer(
    config: RunConfig,
    *,
    name: str,
    storage: str,
    workers: int = 1,
    use_gpu: bool = False,
    cpus_per_worker: float = 1,
    gpus_per_worker: float | None = None,
    max_failures: int = 2,
    num_to_keep: int = 2,
    keep_best: tuple[str, str] | None = None,
    callbacks: list | None = None,
    progress: bool = False,
) -> TorchTrainer:
    """A TorchTrainer running `train_loop_per_worker`; callbacks must be ray.train.UserCallback objects.

    keep_best=(metric, mode) keeps the num_to_keep best checkpoints by that metric; Ray Train always keeps
    the latest one besides, so a resume still starts from the last epoch."""
    resources: dict[str, float] = {"CPU": cpus_per_worker}
    if use_gpu:
        resources["GPU"] = 1 if gpus_per_worker is None else gpus_per_worker
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config, "progress": progress, "rank_by": keep_best},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage,
            checkpoint_config=CheckpointConfig(
                num_to_keep=num_to_keep,
                checkpoint_score_attribute=CHECKPOINT_RANK if keep_best else None,
                checkpoint_score_order=keep_best[1] if keep_best else "max",
            ),
            failure_config=FailureConfig(max_failures=max_failures),
            callbacks=callbacks or [],
        ),
    )


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
