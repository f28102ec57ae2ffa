"""Everything one training run holds between steps, built once and saved whole in a checkpoint.

`build` makes a TrainState from a RunConfig; `state_dict` / `load_state` / `resume` / `write_checkpoint`
move it to and from disk. The loop that changes it is rlan/engine.py.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlan.allocator import keep_freed_memory
from rlan.checkpoint import (
    CheckpointError,
    check_compatible,
    load_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from rlan.config import RunConfig, TrainingConfig
from rlan.data import ArcTrainingDataset, make_train_loader, training_tasks
from rlan.epoch_cost import EpochCost
from rlan.evaluation_sets import EvaluationSets
from rlan.losses import RLANLoss
from rlan.losses.meta_losses import MetaLosses
from rlan.model import RLAN
from rlan.model.output import RLANOutput
from rlan.schedule import lr_factor

# (model output, batch) -> {"total": loss to backpropagate, "<term>": each term}; RLANLoss by default. Tests
# pass a wrapped one to inject non-finite losses or gradients.
LossFn = Callable[[RLANOutput, dict], dict[str, torch.Tensor]]


@dataclass
class TrainState:
    config: RunConfig
    core: RLAN  # the model itself: what is saved, evaluated and plotted
    model: nn.Module  # what the steps call: `core`, or core wrapped for DDP
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    loader: Any  # the bucketed, sharded training batches (rlan.data.make_train_loader)
    steps_per_epoch: int
    loss_fn: LossFn
    meta: MetaLosses
    evaluation: EvaluationSets
    device: torch.device
    amp: bool  # bf16 autocast on the forward
    cost: EpochCost  # counts each epoch's FLOPs, CPU time and memory (rlan/epoch_cost.py)
    rank: int = 0
    world_size: int = 1
    epoch: int = 0  # epochs done
    samples_seen: float = 0.0  # training samples over all epochs, resumed runs included
    last_metrics: dict[str, float] = field(default_factory=dict)  # the latest epoch's, kept in checkpoints
    history: list[dict[str, float]] = field(default_factory=list)  # every epoch of this process


def resolve_device(config: RunConfig) -> torch.device:
    wanted = config.training.device
    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(wanted)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """nanoGPT's rule: matrices and conv kernels decay; biases, norms and embeddings do not."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            is_table = isinstance(module, nn.Embedding) or "embed" in name or "pos" in name
            (decay if p.dim() >= 2 and not is_table else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, t: TrainingConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over param_groups. Fused on CPU as on CUDA: one kernel per tensor instead of a dozen small ops
    each, 7.5 -> 3.2 ms per step at hidden 128 on 2 cores (python -m bench.optimizer_step); same update rule."""
    return torch.optim.AdamW(
        param_groups(model, t.weight_decay),
        lr=t.learning_rate,
        betas=(t.beta1, t.beta2),
        fused=device.type in ("cuda", "cpu"),
    )


def build(
    config: RunConfig,
    *,
    device: torch.device | None = None,
    rank: int = 0,
    world_size: int = 1,
    wrap_model: Callable[[nn.Module], nn.Module] | None = None,
    loss_fn: LossFn | None = None,
) -> TrainState:
    """Model, optimizer, schedule, this rank's data shard and the evaluation sets of a fresh run."""
    t, d = config.training, config.data
    device = device or resolve_device(config)
    keep_freed_memory()
    torch.manual_seed(t.seed)
    core = RLAN(config.model).to(device)
    optimizer = make_optimizer(core, t, device)
    dataset = ArcTrainingDataset(
        training_tasks(config), d.samples_per_task, t.seed, d.color_permutation_prob, d.dihedral_augment,
        d.holdout_test_pairs,
    )  # fmt: skip
    loader = make_train_loader(
        dataset, t.batch_size, d.bucket_boundaries, t.seed, d.num_workers, rank, world_size
    )
    steps = max(len(loader) // t.grad_accumulation_steps, 1)
    amp = (device.type == "cuda" and t.mixed_precision in ("auto", "bf16")) or t.mixed_precision == "bf16"
    return TrainState(
        config=config,
        core=core,
        model=wrap_model(core) if wrap_model else core,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(config, step, steps)),
        loader=loader,
        steps_per_epoch=steps,
        loss_fn=loss_fn or RLANLoss(t),
        meta=MetaLosses(config),
        evaluation=EvaluationSets(config, device, rank, world_size),
        device=device,
        amp=amp,
        cost=EpochCost(device, amp),
        rank=rank,
        world_size=world_size,
    )


# ------------------------------------------------------------------------------------------ on disk
def state_dict(state: TrainState) -> dict[str, Any]:
    return {
        "model": state.core.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "epoch": state.epoch,
        "samples_seen": state.samples_seen,
        "last_metrics": state.last_metrics,
        "rng": rng_state(),
        "config": state.config.to_dict(),
    }


def load_state(state: TrainState, saved: dict[str, Any], where: str = "checkpoint") -> None:
    check_compatible(saved, state.config.model, where)
    try:
        state.core.load_state_dict(saved["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{where}: weights do not fit the model ({str(exc).splitlines()[0]})") from None
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    state.epoch = int(saved["epoch"])
    state.samples_seen = float(saved.get("samples_seen", 0.0))
    state.last_metrics = dict(saved.get("last_metrics", {}))
    restore_rng(saved["rng"])


def resume(state: TrainState, checkpoint_dir: str | Path) -> None:
    load_state(state, load_checkpoint(checkpoint_dir), str(checkpoint_dir))


def write_checkpoint(state: TrainState, root: Path | None) -> str | None:
    """Rank 0 saves the state under root/epoch_NNNN (keeping only the latest), or in a temporary folder
    when root is None; other ranks save nothing."""
    if state.rank != 0:
        return None
    if root is None:
        return str(save_checkpoint(tempfile.mkdtemp(prefix="rlan-ckpt-"), state_dict(state)).parent)
    target = root / f"epoch_{state.epoch:04d}"
    save_checkpoint(target, state_dict(state))
    for old in root.glob("epoch_*"):  # keep the latest only; Ray keeps its own copies
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return str(target)


def adopt_learning_rate(state: TrainState) -> None:
    """This config's learning rate at the loaded step, after loading a state trained with another one (a
    PBT trial that copied a better trial's weights and then perturbed the rate): the optimizer and schedule
    state carry the other run's rate."""
    lr, scheduler = state.config.training.learning_rate, state.scheduler
    scheduler.base_lrs = [lr] * len(scheduler.base_lrs)
    for group, factor in zip(state.optimizer.param_groups, scheduler.lr_lambdas, strict=True):
        group["initial_lr"] = lr
        group["lr"] = lr * factor(scheduler.last_epoch)
