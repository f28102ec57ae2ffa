"""One epoch of optimiser steps: forward, loss, meta losses under the cap, NaN guard, accumulate, clip, step."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from rlan.config import RunConfig
from rlan.epoch_stats import MetricAccumulator, add_output_stats, add_train_accuracy
from rlan.losses import MetaCap
from rlan.losses.meta import AugmentationEquivarianceLoss, OutputEquivarianceLoss, loo_loss
from rlan.model import run_on_batch
from rlan.model.output import ModelStages, RLANOutput
from rlan.schedule import meta_at, stages_at


class Trainer(Protocol):
    """What one epoch of steps reads of rlan.engine.Trainer: declared here, so this module needs no import
    of the engine (which imports it)."""

    config: RunConfig
    model: torch.nn.Module  # the wrapped model (DDP on several ranks)
    core: torch.nn.Module  # the RLAN itself
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loader: Any
    device: torch.device
    amp: bool
    progress: bool
    rank: int
    loss_fn: Callable[..., dict[str, torch.Tensor]]
    meta: MetaLosses
    hooks: Any

    def batches(self) -> Iterator[dict[str, Any]]: ...


@dataclass
class StepOutcome:
    samples: int = 0
    nan_batches: int = 0
    longest_streak: int = 0
    aborted: bool = False


class MetaLosses:
    """LOO, context-level and output-level equivariance, weighted and capped together (fix 2)."""

    NAMES = ("loo", "equiv", "output_equiv")

    def __init__(self, config: RunConfig):
        t = config.training
        self.config = config
        self.cap = MetaCap.from_config(t.meta_escalation)
        self.equiv = AugmentationEquivarianceLoss(
            t.equivariance_training.num_augmentations, pooling=t.equivariance_training.pooling
        )
        self.output_equiv = OutputEquivarianceLoss(
            t.output_equivariance_training.num_augmentations, t.output_equivariance_training.color_permutation
        )

    def compute(
        self, model, batch: dict, output: RLANOutput, stages: ModelStages, epoch: int, index: int
    ) -> dict[str, tuple[float, torch.Tensor]]:
        """{name: (weight, loss)} for the meta losses active this epoch."""
        t = self.config.training
        active = meta_at(self.config, epoch, stages)
        terms: dict[str, tuple[float, torch.Tensor]] = {}
        if active.loo:
            loss, _ = loo_loss(model, batch, stages, t.loo_training.max_loo_pairs)
            terms["loo"] = (t.loo_training.loss_weight, loss)
        # The augmentations drawn for a batch depend on (seed, epoch, batch) only, so a resumed run
        # draws the same ones.
        generator = torch.Generator().manual_seed((t.seed * 1_000_003 + epoch * 10_007 + index) % 2**31)
        if active.equivariance:
            loss, _ = self.equiv(model, batch, stages, generator=generator)
            terms["equiv"] = (t.equivariance_training.loss_weight, loss)
        if active.output_equivariance:
            loss, _ = self.output_equiv(
                model, batch, stages, original_logits=output.logits, generator=generator
            )
            terms["output_equiv"] = (t.output_equivariance_training.loss_weight, loss)
        return terms

    def cap_inputs(self, losses: dict[str, torch.Tensor], terms: dict) -> tuple[float, list[float]]:
        """The task-loss value and the meta weights the cap compares (training.meta_escalation
        .meta_loss_cap_inputs): the seed's, or those of the losses active this batch."""
        t = self.config.training
        task = float(losses["task_loss"].detach())
        if t.meta_escalation.meta_loss_cap_inputs == "active":
            return task, [w for w, _ in terms.values()]
        # The seed's train_epoch: its task loss holds the min-clue hinge (reference 4.4), and W counts the
        # LOO and context-equivariance losses that exist, whether or not they have started.
        task += t.lambda_sparsity * float(losses["min_clue_loss"].detach())
        blocks = (t.loo_training, t.equivariance_training)
        return task, [b.loss_weight for b in blocks if b.enabled]

    def combine(
        self, losses: dict[str, torch.Tensor], terms: dict[str, tuple[float, torch.Tensor]]
    ) -> tuple[float, torch.Tensor]:
        """The cap factor of this batch and factor * sum(weight * loss) over the active meta losses."""
        meta = sum(w * loss for w, loss in terms.values()) if terms else torch.zeros(())
        if not self.cap.enabled:
            return 1.0, meta
        task, weights = self.cap_inputs(losses, terms)
        if self.cap.mode == "value":  # compares values, so only the losses computed this batch count
            weights = [w for w, _ in terms.values()]
        values = [float(loss.detach()) for _, loss in terms.values()]
        factor = self.cap.factor(task, weights, values if self.cap.mode == "value" else ())
        return factor, factor * meta


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


def train_batches(trainer: Trainer, epoch: int, acc: MetricAccumulator) -> StepOutcome:
    config, t = trainer.config, trainer.config.training
    model, core, optimizer = trainer.model, trainer.core, trainer.optimizer
    params = [p for p in core.parameters() if p.requires_grad]
    stages = stages_at(config, epoch)
    accum = t.grad_accumulation_steps
    # With accumulation, good micro-batches' gradients are kept aside, so a bad one is dropped alone.
    saved: list[torch.Tensor] | None = None
    pending = 0
    outcome = StepOutcome()
    streak = 0
    optimizer.zero_grad(set_to_none=True)
    bar = tqdm(
        total=len(trainer.loader),
        desc=f"epoch {epoch + 1}/{t.max_epochs}",
        leave=False,
        disable=not (trainer.progress and trainer.rank == 0),
        dynamic_ncols=True,
    )
    for index, batch in enumerate(trainer.batches()):
        bar.update(1)
        with torch.autocast(trainer.device.type, dtype=torch.bfloat16, enabled=trainer.amp):
            out = run_on_batch(model, batch, stages)
            losses = trainer.loss_fn(out, batch)
            terms = trainer.meta.compute(core, batch, out, stages, epoch, index)
        factor, meta_total = trainer.meta.combine(losses, terms)
        total = losses["total"] + meta_total.to(losses["total"].device)
        if trainer.hooks.after_loss:
            total = trainer.hooks.after_loss(epoch, index, total)
        good = _all_ranks_true(bool(torch.isfinite(total.detach())), trainer.device)
        if good:
            (total / accum).backward()
            if trainer.hooks.after_backward:
                trainer.hooks.after_backward(epoch, index, core)
            good = _all_ranks_true(_grads_finite(params), trainer.device)
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
            _optimizer_step(trainer, params, saved, pending, accum, acc)
            saved, pending = None, 0
    if pending:
        _optimizer_step(trainer, params, saved, pending, accum, acc)
    bar.close()
    return outcome


def _optimizer_step(trainer, params, saved, pending: int, accum: int, acc: MetricAccumulator) -> None:
    if saved is not None:
        for p, g in zip(params, saved):
            p.grad = g * (accum / pending)  # a short final window still averages its micro-batches
    clip = trainer.config.training.gradient_clip
    norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
    acc.add("grad_norm", float(norm))
    trainer.optimizer.step()
    trainer.scheduler.step()
    trainer.optimizer.zero_grad(set_to_none=True)


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
