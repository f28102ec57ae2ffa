"""`rlan train`: one RLAN run on Ray Train workers (DDP over gloo or nccl), logged to MLflow by the driver side.

The workers run the framework-free engine and only call `ray.train.report`; they never touch MLflow. The
Train controller (on the driver's node) logs each report through `MlflowTrainCallback`; the driver creates
the MLflow run, prints one line per epoch by polling it, and logs the artifacts at the end.

Resume: Ray Train V2 resumes a run when (storage_path, name) is reused (the checkpoint manager loads
`<storage>/<name>/` and `ray.train.get_checkpoint()` returns the latest checkpoint). The default name is
deterministic, so re-running the same command continues where it stopped, in the same MLflow run.
"""

from __future__ import annotations

import math
import re
import sys
import threading
from contextlib import nullcontext
from typing import Any

import ray.train
import ray.train.torch
import torch
from mlflow import MlflowClient
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, ScalingConfig, UserCallback
from ray.train.torch import TorchTrainer

from orchestrator.artifacts import (
    CURVE_KEYS,
    log_plot_folder,
    log_run_artifacts,
    render_final_plots,
    summary_table,
)
from orchestrator.cluster import check_resources, check_shared_storage, resolve_storage, start_ray
from orchestrator.debug_run import EPOCH_LINE_KEYS, epoch_line
from orchestrator.tracking import (
    MAX_PARAM_LENGTH,
    RunLogger,
    TrackingUnavailable,
    resolve_tracking_uri,
    run_tags,
    sanitize_key,
)
from rlan.config import RunConfig, config_from_dict, with_absolute_paths
from rlan.engine import Trainer

NAME_TAG, STORAGE_TAG = "rlan.train_name", "rlan.train_storage"
# Ray Train ranks checkpoints by this key when a sweep keeps its best ones: the sweep metric on evaluated
# epochs, the worst value otherwise. Ray logs an error for every report that lacks the key, and an epoch
# that did not evaluate (eval_every > 1) has no score, so the key is always there.
CHECKPOINT_RANK = "checkpoint_rank"


# ------------------------------------------------------------------------------------------ workers
class RayReporter:
    """The engine's Reporter inside a Train worker; every rank calls report once per epoch (it is a barrier)."""

    def __init__(self, world_size: int, rank_by: tuple[str, str] | None = None):
        self.world_size, self.rank_by = world_size, rank_by
        self.trainer: Trainer | None = None  # set once the Trainer exists, for the final plots

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
        trainer = self.trainer
        if checkpoint_dir and trainer is not None and epoch + 1 == trainer.config.training.max_epochs:
            render_final_plots(trainer, checkpoint_dir)
        checkpoint = Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None  # rank 0 only
        report = {**metrics, **self.rank(metrics), "world_size": float(self.world_size)}
        ray.train.report(report, checkpoint=checkpoint)


def wrap_ddp(model: torch.nn.Module) -> torch.nn.Module:
    """DDP over Ray's process group; staged modules (HyperLoRA, solver steps) leave parameters unused."""
    return ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})


def worker_trainer(loop_config: dict[str, Any]) -> Trainer:
    """The engine's Trainer on this Train worker, resumed from Ray's latest checkpoint when there is one.

    loop_config = {"config": RunConfig.to_dict(), "progress": bool, "rank_by": [metric, mode] or None};
    the engine shards the data itself.
    """
    config = config_from_dict(loop_config["config"], "train loop config")
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    rank_by = loop_config.get("rank_by")
    reporter = RayReporter(world_size, tuple(rank_by) if rank_by else None)
    trainer = Trainer(
        config,
        reporter,
        device=ray.train.torch.get_device(),
        rank=rank,
        world_size=world_size,
        wrap_model=wrap_ddp if world_size > 1 else None,
        progress=bool(loop_config.get("progress")) and rank == 0,
    )
    reporter.trainer = trainer
    checkpoint = ray.train.get_checkpoint()  # every rank gets it and loads the same state
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            trainer.resume(directory)
    return trainer


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Runs on every worker; reports once per epoch on every rank.

    A run resumed after its last epoch was checkpointed (a sweep stopped between that checkpoint and Tune
    or MLflow taking the epoch's report) reports that epoch again, so that the trial ends "completed" with
    its score rather than with no result; the MLflow callbacks skip an epoch they already logged."""
    trainer = worker_trainer(loop_config)
    if trainer.epoch >= trainer.config.training.max_epochs and trainer.last_metrics:
        trainer.reporter.report(trainer.epoch - 1, trainer.last_metrics, None)
    else:
        trainer.fit()


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
        train_loop_config={"config": config.to_dict(), "progress": progress, "rank_by": keep_best},
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


# ------------------------------------------------------------------------------------------ MLflow
class MlflowTrainCallback(UserCallback):
    """Rank 0's metrics of each report to one MLflow run (step = epoch, 1-based); runs in the controller.

    Epochs already in the run are skipped: a restarted worker group re-reports from its checkpoint.
    """

    def __init__(self, tracking_uri: str, run_id: str):
        self.tracking_uri, self.run_id = tracking_uri, run_id
        self._logger: RunLogger | None = None
        self._last_step = 0

    def __getstate__(self) -> dict[str, Any]:  # the client is opened where the callback runs
        return {**self.__dict__, "_logger": None}

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        if not metrics or "epoch" not in metrics[0]:
            return
        step = int(metrics[0]["epoch"])
        try:
            if self._logger is None:
                self._logger = RunLogger(self.tracking_uri, "", run_id=self.run_id)
                self._last_step = self._logger.last_logged_step("epoch") or 0
            if step > self._last_step:
                self._logger.log_metrics(metrics[0], step=step)  # buffered by RunLogger if MLflow is down
                self._last_step = step
        except TrackingUnavailable as exc:
            # An exception here would fail the whole Train run: training goes on, the gap is reported.
            print(f"rlan: MLflow unavailable, epoch {step} not logged: {exc}", file=sys.stderr, flush=True)
            if self._logger is not None:
                self._logger.note_gap([step])


class EpochPrinter(threading.Thread):
    """One line per epoch on the driver, read back from the MLflow run (controller output is not forwarded)."""

    def __init__(self, logger: RunLogger, total_epochs: int, shown: int, interval_s: float = 2.0):
        super().__init__(daemon=True)
        self.logger, self.total, self.shown, self.interval_s = logger, total_epochs, shown, interval_s
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval_s):
            self.poll()

    def poll(self) -> None:
        try:
            steps = sorted({s for s, _ in self.logger.metric_history("epoch") if s > self.shown})
            if not steps:
                return
            values = {key: dict(self.logger.metric_history(key)) for key, _ in EPOCH_LINE_KEYS}
        except Exception:  # printing is best effort; the next poll tries again
            return
        for step in steps:
            metrics = {key: series[step] for key, series in values.items() if step in series}
            print(epoch_line(step - 1, self.total, metrics), flush=True)
            self.shown = step

    def stop(self) -> None:
        self.done.set()
        self.join()
        self.poll()


def default_train_name(config: RunConfig, experiment: str) -> str:
    """Deterministic, so the same command finds its Train snapshot and MLflow run again."""
    slug = lambda text: re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"
    return f"{slug(experiment)}-{slug(config.logging.run_name or 'train')}-{config.config_hash()}"


def open_train_run(
    config: RunConfig, tracking_uri: str, experiment: str, name: str, storage: str
) -> RunLogger:
    """The MLflow run of Train run (storage, name): re-attached if one exists (any status), else created."""
    tags = run_tags(config, {"rlan.command": "train", NAME_TAG: name, STORAGE_TAG: storage})
    client = MlflowClient(tracking_uri=resolve_tracking_uri(tracking_uri))
    found = client.get_experiment_by_name(experiment)
    runs = []
    if found is not None and found.lifecycle_stage == "active":
        where = f"tags.`{NAME_TAG}` = '{name}'"  # names are slugs; storage paths may hold quotes
        runs = client.search_runs([found.experiment_id], where, order_by=["attributes.start_time DESC"])
        runs = [run for run in runs if run.data.tags.get(STORAGE_TAG) == storage]
    if not runs:
        logger = RunLogger(tracking_uri, experiment, run_name=name, tags=tags)
        logger.log_params(config.to_flat_dict())
        return logger
    logger = RunLogger(tracking_uri, experiment, tags=tags, run_id=runs[0].info.run_id)
    if "rlan.error" in runs[0].data.tags:  # the failure this attempt resumes from
        client.delete_tag(logger.run_id, "rlan.error")
    logged = runs[0].data.params
    flat = {sanitize_key(k): str(v)[:MAX_PARAM_LENGTH] for k, v in config.to_flat_dict().items()}
    logger.log_params({k: v for k, v in flat.items() if k not in logged})
    # MLflow params are immutable: a resume with another value (e.g. more epochs) is recorded as a tag.
    logger.set_tags({f"rlan.resumed_with.{k}": v for k, v in flat.items() if logged.get(k, v) != v})
    return logger


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
    use_gpu: bool = False,
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
    start_ray(address)
    check_resources(workers, 1.0, 1.0 if use_gpu else 0.0, wait_for_resources, what="the run")
    check_shared_storage(storage)
    logger = open_train_run(config, tracking_uri, experiment, name, storage)
    logger.set_tags({"rlan.workers": workers, "rlan.use_gpu": use_gpu})
    callback = MlflowTrainCallback(logger.tracking_uri, logger.run_id)
    trainer = build_torch_trainer(
        config, name=name, storage=storage, workers=workers, use_gpu=use_gpu, max_failures=max_failures,
        callbacks=[callback],
    )  # fmt: skip
    printer = EpochPrinter(logger, config.training.max_epochs, logger.last_logged_step("epoch") or 0)
    with logger:  # ends FINISHED, or FAILED (KILLED on Ctrl-C) when anything below raises
        if echo:
            printer.start()
        try:
            result = trainer.fit()
        except ray.train.TrainingFailedError as exc:
            logger.set_tags({"rlan.error": failure_line(exc)})
            raise RuntimeError(failure_line(exc)) from None
        except BaseException as exc:
            logger.set_tags({"rlan.error": _one_line(exc)})
            raise
        finally:
            if echo:
                printer.stop()
        metrics = {k: float(v) for k, v in (result.metrics or {}).items() if isinstance(v, int | float)}
        checkpoint = result.checkpoint if log_checkpoint else None  # a local folder, or fetched from storage
        with checkpoint.as_directory() if checkpoint else nullcontext() as directory:
            log_run_artifacts(logger, config, curve_history(logger), {}, directory)
            log_plot_folder(logger, directory)
    if echo:
        print(summary_table(metrics))
    return logger.run_id, metrics


def curve_history(logger: RunLogger) -> list[dict[str, float]]:
    """The learning-curve keys per epoch, read back from the run (it may span several resumed attempts)."""
    by_step: dict[int, dict[str, float]] = {}
    for key in CURVE_KEYS:
        for step, value in logger.metric_history(key):
            by_step.setdefault(step, {"epoch": float(step)})[key] = value
    return [by_step[step] for step in sorted(by_step)]
