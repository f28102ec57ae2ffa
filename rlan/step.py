"""One epoch of optimiser steps: forward, loss, meta losses under the cap, NaN guard, accumulate, clip, step."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from rlan.data import move_batch
from rlan.epoch_stats import MetricAccumulator, add_output_stats, add_train_accuracy
from rlan.losses.meta_losses import MetaLosses
from rlan.model import run_on_batch
from rlan.model.output import ModelStages
from rlan.train_state import TrainState


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
    for index, batch in enumerate(state.loader):
        batch = move_batch(batch, state.device)
        bar.update(1)
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
