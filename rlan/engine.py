"""The training loop in one file: epochs of bucketed ARC batches, optimiser steps, evaluation, checkpoints.

    state = build(config)              # rlan/train_state.py: model, optimizer, data shard, evaluation sets
    resume(state, checkpoint_dir)      # optional
    fit(state, reporter)               # per epoch: stages -> train_epoch -> evaluate -> checkpoint -> report
      train_epoch                      #   train_batches, then the epoch's metrics reduced over every worker
        train_batches                  #     per batch: forward, losses, capped meta losses, NaN guard,
                                       #     accumulation; _optimizer_step: clip, step, LR schedule

Framework-free: it talks to the outside only through the Reporter it is given (an MLflow recorder for
`rlan debug`, ray.train.report inside Ray Train workers). Distribution is optional: build with rank/world_size
and a `wrap_model` (e.g. Ray's prepare_model for DDP); metrics are then reduced over every worker.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from rlan.data import move_batch, set_loader_epoch
from rlan.diagnostics import selection_score
from rlan.epoch_stats import (
    MetricAccumulator,
    ReduceFn,
    add_output_stats,
    add_train_accuracy,
    dist_is_on,
    dist_reduce,
    finish_epoch,
    no_reduce,
)
from rlan.losses.meta_losses import MetaLosses
from rlan.model import run_on_batch
from rlan.model.canvas import canvas_work
from rlan.model.output import ModelStages
from rlan.schedule import meta_at, stages_at
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
    state.cost.start()
    outcome = train_batches(state, epoch, stages, acc, progress)
    elapsed = time.perf_counter() - start
    _add_cost(acc, state.cost.metrics(), elapsed, outcome.samples)
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


def _add_cost(acc: MetricAccumulator, cost: dict[str, float], elapsed: float, samples: int) -> None:
    """This worker's system/* figures into the epoch's reduction: means over workers, memory peaks as maxima."""
    flops, peak = cost.pop("system/flops"), cost.pop("system/peak_flops")
    achieved = flops / max(elapsed, 1e-9)
    acc.add("system/gflops_per_s", achieved / 1e9, 1)
    acc.add("system/mfu", achieved / peak, 1)
    acc.add("system/matmul_gflops_per_s", peak / 1e9, 1)
    if samples:
        acc.add("system/gflop_per_sample", flops / samples / 1e9, 1)
    for key, value in cost.items():
        if "peak" in key:
            acc.high(key, value)
        else:
            acc.add(key, value, 1)


def evaluate(state: TrainState, stages: ModelStages, train_metrics: dict[str, float]) -> dict[str, float]:
    """Both evaluation sets under the epoch's stages, and the score. The score is computed from the
    evaluation metrics alone, so no training loss or regulariser weight can reach it."""
    metrics = state.evaluation.run(state.core, stages, train_metrics)
    score = selection_score(metrics)
    if score is not None:
        metrics["score"] = score
    return metrics


# ------------------------------------------------------------------------------------------ steps
@dataclass
class StepOutcome:
    samples: int = 0
    nan_batches: int = 0
    longest_streak: int = 0
    aborted: bool = False


def _all_ranks_true(flag: bool, device: torch.device) -> bool:
    """DDP needs every rank to take the same branch: a batch is skipped everywhere if bad anywhere."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def _grads_finite(params: list[torch.Tensor]) -> bool:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return True
    return bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())


def train_batches(
    state: TrainState, epoch: int, stages: ModelStages, acc: MetricAccumulator, progress: bool = False
) -> StepOutcome:
    t = state.config.training
    model, core, optimizer = state.model, state.core, state.optimizer
    params = [p for p in core.parameters() if p.requires_grad]
    accum = t.grad_accumulation_steps
    # With accumulation, good micro-batches' gradients are kept aside, so a bad one is dropped alone.
    saved: list[torch.Tensor] | None = None
    pending = 0
    outcome = StepOutcome()
    streak = 0
    optimizer.zero_grad(set_to_none=True)
    bar = tqdm(
        total=len(state.loader),
        desc=f"epoch {epoch + 1}/{t.max_epochs}",
        leave=False,
        disable=not (progress and state.rank == 0),
        dynamic_ncols=True,
    )
    # What decides a step's FLOPs besides the batch: the staged modules and the meta losses that run (not the
    # temperature or the LoRA scale, which change every epoch and cost nothing).
    signature = (
        stages.solver_context,
        stages.cross_attention,
        stages.hyperlora,
        repr(meta_at(state.config, epoch, stages)),
    )
    for index, batch in enumerate(state.loader):
        batch = move_batch(batch, state.device)
        bar.update(1)
        with state.cost.counting(batch, signature, canvas_work(batch, core.config.canvas_sides)):
            with torch.autocast(state.device.type, dtype=torch.bfloat16, enabled=state.amp):
                out = run_on_batch(model, batch, stages)
                losses = state.loss_fn(out, batch)
                terms = state.meta.compute(core, batch, out, stages, epoch, index)
            factor, meta_total = state.meta.combine(losses, terms)
            total = losses["total"] + meta_total.to(losses["total"].device)
            good = _all_ranks_true(bool(torch.isfinite(total.detach())), state.device)
            if good:
                (total / accum).backward()
                good = _all_ranks_true(_grads_finite(params), state.device)
        if not good:
            state.cost.discard()  # a skipped backward: not the FLOPs of this shape's step
            outcome.nan_batches += 1
            streak += 1
            outcome.longest_streak = max(outcome.longest_streak, streak)
            for p in params:  # this micro-batch's gradients only; earlier ones sit in `saved`
                p.grad = None
            if outcome.nan_batches >= t.nan_batches_abort:
                outcome.aborted = True
                break
            continue
        streak = 0
        outcome.samples += len(batch["task_ids"])
        _record(acc, out, losses, terms, factor, total, batch, t.stop_saturation_threshold)
        bar.set_postfix(loss=f"{float(total.detach()):.4f}")
        pending += 1
        if accum > 1:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            saved = grads if saved is None else torch._foreach_add(saved, grads)
            for p in params:
                p.grad = None
        if pending == accum:
            _optimizer_step(state, params, saved, pending, accum, acc)
            saved, pending = None, 0
    if pending:
        _optimizer_step(state, params, saved, pending, accum, acc)
    bar.close()
    return outcome


def _optimizer_step(
    state: TrainState, params, saved, pending: int, accum: int, acc: MetricAccumulator
) -> None:
    if saved is not None:
        for p, g in zip(params, saved):
            p.grad = g * (accum / pending)  # a short final window still averages its micro-batches
    clip = state.config.training.gradient_clip
    norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
    acc.add("grad_norm", float(norm))
    state.optimizer.step()
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)


def _record(acc, out, losses, terms, factor, total, batch, saturation_threshold) -> None:
    b = len(batch["task_ids"])
    acc.add("train/loss", float(total.detach()) * b, b)
    for name, value in losses.items():
        if name != "total" and torch.is_tensor(value) and value.dim() == 0:
            acc.add(f"train/{name}", float(value.detach()) * b, b)
    weighted = 0.0
    for name in MetaLosses.NAMES:
        weight, loss = terms.get(name, (0.0, torch.zeros(())))
        acc.add(f"meta/{name}_loss", float(loss.detach()) * b, b)
        weighted += factor * weight * float(loss.detach())
    acc.add("meta/cap_factor", factor * b, b)
    acc.add("meta/share", weighted / max(abs(float(total.detach())), 1e-12) * b, b)
    add_output_stats(acc, out, batch, saturation_threshold)
    add_train_accuracy(acc, out.logits, batch)


# ------------------------------------------------------------------------------------------ workers
def _reduce(state: TrainState) -> ReduceFn:
    return dist_reduce if dist_is_on(state.world_size) else no_reduce


def _shared_keys(state: TrainState, acc: MetricAccumulator) -> dict[str, list[str]] | None:
    """Every rank must reduce the same keys in the same order, so take the union of all ranks' keys."""
    if _reduce(state) is no_reduce:
        return None
    gathered: list[Any] = [None] * state.world_size
    dist.all_gather_object(gathered, acc.key_sets())
    return {kind: sorted({k for keys in gathered for k in keys[kind]}) for kind in ("sum", "min", "max")}
