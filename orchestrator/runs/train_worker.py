"""The Ray Train worker's half of a run: build the engine's state (resumed from Ray's checkpoint), train, and
report every epoch through `ray.train.report`.

Kept apart from orchestrator/runs/train.py, and free of MLflow: Ray starts a fresh process for every worker
(each trial, each restart after a failure) and it imports this module before training; MLflow's import alone
is about 1 s on 2 cores. orchestrator/tracking/artifacts.py (the final plots) imports no MLflow either.
"""

from __future__ import annotations

import math
from typing import Any

import ray.train
import ray.train.torch
import torch
from ray.train import Checkpoint

from orchestrator.tracking.artifacts import render_final_plots
from rlan import engine
from rlan.config import RunConfig
from rlan.engine import TrainState

# Ray Train ranks checkpoints by this key when a sweep keeps its best ones: the sweep metric on evaluated
# epochs, the worst value otherwise. Ray logs an error for every report that lacks the key, and an epoch
# that did not evaluate (eval_every > 1) has no score, so the key is always there.
CHECKPOINT_RANK = "checkpoint_rank"


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
