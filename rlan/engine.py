"""The training loop, on one screen: epochs of bucketed ARC batches, evaluation, checkpoints, one report each.

    state = build(config)                  # rlan/train_state.py: model, optimizer, data shard, evaluation sets
    resume(state, checkpoint_dir)          # optional
    fit(state, reporter)                   # per epoch: stages -> train_epoch -> evaluate -> checkpoint -> report

Framework-free: it talks to the outside only through the Reporter it is given (an MLflow recorder for
`rlan debug`, ray.train.report inside Ray Train workers). Distribution is optional: build with rank/world_size
and a `wrap_model` (e.g. Ray's prepare_model for DDP); metrics are then reduced over every worker. One
epoch's optimiser steps (forward, losses, meta-loss cap, NaN guard, accumulation, clipping) are rlan/step.py.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Protocol

import torch.distributed as dist

from rlan.data import set_loader_epoch
from rlan.diagnostics import selection_score
from rlan.epoch_stats import MetricAccumulator, ReduceFn, dist_is_on, dist_reduce, finish_epoch, no_reduce
from rlan.model.output import ModelStages
from rlan.schedule import stages_at
from rlan.step import train_batches
from rlan.train_state import TrainState, build, resume, state_dict, write_checkpoint

__all__ = [
    "NullReporter",
    "Reporter",
    "TrainState",
    "build",
    "evaluate",
    "fit",
    "resume",
    "state_dict",
    "train_epoch",
]


class Reporter(Protocol):
    def report(self, epoch: int, metrics: dict[str, float], checkpoint_dir: str | None) -> None: ...


class NullReporter:
    def report(self, epoch: int, metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        pass


def fit(
    state: TrainState,
    reporter: Reporter | None = None,
    checkpoint_root: str | Path | None = None,
    progress: bool | None = None,
) -> dict[str, float]:
    """Train from state.epoch to max_epochs, reporting after each epoch; returns the last epoch's metrics.

    Checkpoints go under checkpoint_root (the latest kept), or to a temporary folder removed after the report."""
    reporter = reporter or NullReporter()
    root = Path(checkpoint_root) if checkpoint_root else None
    progress = state.config.logging.progress if progress is None else progress
    t, e = state.config.training, state.config.evaluation
    last: dict[str, float] = {}
    start = time.perf_counter()
    while state.epoch < t.max_epochs:
        epoch = state.epoch
        stages = stages_at(state.config, epoch)
        metrics = train_epoch(state, epoch, stages, progress)
        state.samples_seen += metrics.get("samples", 0.0)
        metrics["samples_seen"] = state.samples_seen
        if (epoch + 1) % e.eval_every == 0 or epoch + 1 == t.max_epochs:
            metrics.update(evaluate(state, stages, metrics))
        metrics["epoch"] = float(epoch + 1)
        metrics["wall_s"] = time.perf_counter() - start  # training and evaluation, this process
        state.epoch = epoch + 1
        state.history.append(metrics)
        state.last_metrics = last = metrics
        directory = write_checkpoint(state, root)
        reporter.report(epoch, metrics, directory)
        if directory and root is None:
            shutil.rmtree(directory, ignore_errors=True)
    return last


def train_epoch(
    state: TrainState, epoch: int, stages: ModelStages, progress: bool = False
) -> dict[str, float]:
    """One epoch of optimiser steps under the epoch's stages; its metrics reduced over every worker."""
    set_loader_epoch(state.loader, epoch)
    state.model.train()
    acc = MetricAccumulator()
    start = time.perf_counter()
    outcome = train_batches(state, epoch, stages, acc, progress)
    elapsed = time.perf_counter() - start
    acc.add("samples", outcome.samples, 1)
    acc.add("nan_batches", outcome.nan_batches, 1)
    acc.high("nan_streak_max", outcome.longest_streak)
    acc.high("epoch_aborted", float(outcome.aborted))
    metrics = finish_epoch(acc.reduce(_reduce(state), _shared_keys(state, acc)))
    metrics["samples_per_s"] = metrics.get("samples", 0.0) / max(elapsed, 1e-9)
    metrics["epoch_time_s"] = elapsed
    metrics["lr"] = state.optimizer.param_groups[0]["lr"]
    metrics["temperature"] = stages.temperature
    metrics["lora/delta_scale"] = stages.delta_scale if stages.hyperlora else 0.0
    metrics.setdefault("lora/delta_norm", 0.0)  # every key every epoch, so curves have no gaps
    return metrics


def evaluate(state: TrainState, stages: ModelStages, train_metrics: dict[str, float]) -> dict[str, float]:
    """Both evaluation sets under the epoch's stages, and the score. The score is computed from the
    evaluation metrics alone, so no training loss or regulariser weight can reach it."""
    metrics = state.evaluation.run(state.core, stages, train_metrics)
    score = selection_score(metrics)
    if score is not None:
        metrics["score"] = score
    return metrics


def _reduce(state: TrainState) -> ReduceFn:
    return dist_reduce if dist_is_on(state.world_size) else no_reduce


def _shared_keys(state: TrainState, acc: MetricAccumulator) -> dict[str, list[str]] | None:
    """Every rank must reduce the same keys in the same order, so take the union of all ranks' keys."""
    if _reduce(state) is no_reduce:
        return None
    gathered: list[Any] = [None] * state.world_size
    dist.all_gather_object(gathered, acc.key_sets())
    return {kind: sorted({k for keys in gathered for k in keys[kind]}) for kind in ("sum", "min", "max")}
