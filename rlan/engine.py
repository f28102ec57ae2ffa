"""The training loop: epochs of bucketed ARC batches, the meta-loss cap, a NaN guard, evaluation, checkpoints.

Framework-free: it talks to the outside only through the Reporter it is given (an MLflow logger for
`rlan debug`, ray.train.report inside Ray Train workers). Distribution is optional: pass rank/world_size
and a `wrap_model` (e.g. Ray's prepare_model for DDP); metrics are then reduced over every worker.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn

from rlan.checkpoint import (
    CheckpointError,
    check_compatible,
    load_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from rlan.config import RunConfig
from rlan.data import ArcTrainingDataset, make_train_loader, move_batch, set_loader_epoch, training_tasks
from rlan.diagnostics import selection_score
from rlan.epoch_stats import MetricAccumulator, ReduceFn, dist_is_on, dist_reduce, finish_epoch, no_reduce
from rlan.evaluation_sets import EvaluationSets
from rlan.losses import RLANLoss
from rlan.model import RLAN
from rlan.schedule import lr_factor, stages_at
from rlan.step import MetaLosses, StepOutcome, train_batches


class Reporter(Protocol):
    def report(self, epoch: int, metrics: dict[str, float], checkpoint_dir: str | None) -> None: ...


class NullReporter:
    def report(self, epoch: int, metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        pass


@dataclass
class Hooks:
    """Test seams: change a batch's loss, or its gradients after backward (NaN injection)."""

    after_loss: Callable[[int, int, torch.Tensor], torch.Tensor] | None = None
    after_backward: Callable[[int, int, nn.Module], None] | None = None


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


class Trainer:
    def __init__(
        self,
        config: RunConfig,
        reporter: Reporter | None = None,
        *,
        device: torch.device | None = None,
        rank: int = 0,
        world_size: int = 1,
        wrap_model: Callable[[nn.Module], nn.Module] | None = None,
        checkpoint_root: str | Path | None = None,
        hooks: Hooks | None = None,
        progress: bool | None = None,
    ):
        self.config = config
        self.reporter = reporter or NullReporter()
        self.device = device or resolve_device(config)
        self.rank, self.world_size = rank, world_size
        self.hooks = hooks or Hooks()
        self.checkpoint_root = Path(checkpoint_root) if checkpoint_root else None
        self.progress = config.logging.progress if progress is None else progress
        t = config.training
        torch.manual_seed(t.seed)
        self.core = RLAN(config.model).to(self.device)
        self.model = wrap_model(self.core) if wrap_model else self.core
        self.optimizer = torch.optim.AdamW(
            param_groups(self.core, t.weight_decay),
            lr=t.learning_rate,
            betas=(t.beta1, t.beta2),
            fused=self.device.type == "cuda",
        )
        self.dataset = ArcTrainingDataset(
            training_tasks(config),
            config.data.samples_per_task,
            t.seed,
            config.data.color_permutation_prob,
            config.data.dihedral_augment,
            config.data.holdout_test_pairs,
        )
        self.loader = make_train_loader(
            self.dataset,
            t.batch_size,
            config.data.bucket_boundaries,
            t.seed,
            config.data.num_workers,
            rank,
            world_size,
        )
        self.steps_per_epoch = max(len(self.loader) // t.grad_accumulation_steps, 1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(config, step, self.steps_per_epoch)
        )
        self.loss_fn = RLANLoss(t)
        self.meta = MetaLosses(config)
        self.evaluation = EvaluationSets(config, self.device, rank, world_size)
        self.epoch = 0
        self.samples_seen = 0.0  # training samples over all epochs, resumed runs included
        self.amp = self.device.type == "cuda" and t.mixed_precision in ("auto", "bf16")
        self.amp = self.amp or t.mixed_precision == "bf16"
        self.history: list[dict[str, float]] = []
        self.last_metrics: dict[str, float] = {}  # the latest epoch's, kept in checkpoints

    # ----------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.core.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "samples_seen": self.samples_seen,
            "last_metrics": self.last_metrics,
            "rng": rng_state(),
            "config": self.config.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], where: str = "checkpoint") -> None:
        check_compatible(state, self.config.model, where)
        try:
            self.core.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise CheckpointError(
                f"{where}: weights do not fit the model ({str(exc).splitlines()[0]})"
            ) from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.samples_seen = float(state.get("samples_seen", 0.0))
        self.last_metrics = dict(state.get("last_metrics", {}))
        restore_rng(state["rng"])

    def resume(self, checkpoint_dir: str | Path) -> None:
        self.load_state_dict(load_checkpoint(checkpoint_dir), str(checkpoint_dir))

    def _write_checkpoint(self) -> str | None:
        if self.rank != 0:
            return None
        if self.checkpoint_root is None:
            return str(save_checkpoint(tempfile.mkdtemp(prefix="rlan-ckpt-"), self.state_dict()).parent)
        target = self.checkpoint_root / f"epoch_{self.epoch:04d}"
        save_checkpoint(target, self.state_dict())
        for old in self.checkpoint_root.glob("epoch_*"):  # keep the latest only; Ray keeps its own copies
            if old != target:
                shutil.rmtree(old, ignore_errors=True)
        return str(target)

    # ----------------------------------------------------------------------------------- loop
    def _reduce(self) -> ReduceFn:
        return dist_reduce if dist_is_on(self.world_size) else no_reduce

    def fit(self) -> dict[str, float]:
        """Train from self.epoch to max_epochs, reporting after each epoch; returns the last metrics."""
        last: dict[str, float] = {}
        start = time.perf_counter()
        while self.epoch < self.config.training.max_epochs:
            epoch = self.epoch
            metrics = self.train_epoch(epoch)
            self.samples_seen += metrics.get("samples", 0.0)
            metrics["samples_seen"] = self.samples_seen
            t = self.config.training
            if (epoch + 1) % self.config.evaluation.eval_every == 0 or epoch + 1 == t.max_epochs:
                metrics.update(self.evaluate(epoch, metrics))
            metrics["epoch"] = float(epoch + 1)
            metrics["wall_s"] = time.perf_counter() - start  # training and evaluation, this process
            self.epoch = epoch + 1
            self.history.append(metrics)
            self.last_metrics = metrics
            directory = self._write_checkpoint()
            self.reporter.report(epoch, metrics, directory)
            if directory and self.checkpoint_root is None:
                shutil.rmtree(directory, ignore_errors=True)
            last = metrics
        return last

    def evaluate(self, epoch: int, train_metrics: dict[str, float]) -> dict[str, float]:
        """Both evaluation sets under the epoch's stages, and the score. The score is computed from the
        evaluation metrics alone, so no training loss or regulariser weight can reach it."""
        metrics = self.evaluation.run(self.core, stages_at(self.config, epoch), train_metrics)
        score = selection_score(metrics)
        if score is not None:
            metrics["score"] = score
        return metrics

    def train_epoch(self, epoch: int) -> dict[str, float]:
        set_loader_epoch(self.loader, epoch)
        self.model.train()
        acc = MetricAccumulator()
        start = time.perf_counter()
        outcome: StepOutcome = train_batches(self, epoch, acc)
        elapsed = time.perf_counter() - start
        acc.add("samples", outcome.samples, 1)
        acc.add("nan_batches", outcome.nan_batches, 1)
        acc.high("nan_streak_max", outcome.longest_streak)
        acc.high("epoch_aborted", float(outcome.aborted))
        metrics = finish_epoch(acc.reduce(self._reduce(), self._shared_keys(acc)))
        metrics["samples_per_s"] = metrics.get("samples", 0.0) / max(elapsed, 1e-9)
        metrics["epoch_time_s"] = elapsed
        metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        stages = stages_at(self.config, epoch)
        metrics["temperature"] = stages.temperature
        metrics["lora/delta_scale"] = stages.delta_scale if stages.hyperlora else 0.0
        metrics.setdefault("lora/delta_norm", 0.0)  # every key every epoch, so curves have no gaps
        return metrics

    def _shared_keys(self, acc: MetricAccumulator) -> dict[str, list[str]] | None:
        """Every rank must reduce the same keys in the same order, so take the union of all ranks' keys."""
        if self._reduce() is no_reduce:
            return None
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, acc.key_sets())
        return {kind: sorted({k for keys in gathered for k in keys[kind]}) for kind in ("sum", "min", "max")}

    def batches(self):
        """The epoch's batches on the device."""
        for batch in self.loader:
            yield move_batch(batch, self.device)
