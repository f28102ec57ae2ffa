"""One epoch's health figures, accumulated over every batch (not batch 0 alone) and reduced over every worker.

The keys written here are the ones rlan/diagnostics.py catalogues, with what each means."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.distributed as dist

# (tensor, op) -> reduced tensor; op is "sum", "min" or "max". Identity when not distributed.
ReduceFn = Callable[[torch.Tensor, str], torch.Tensor]


def no_reduce(tensor: torch.Tensor, op: str) -> torch.Tensor:
    return tensor


def dist_is_on(world_size: int) -> bool:
    return world_size > 1 and dist.is_available() and dist.is_initialized()


def dist_reduce(tensor: torch.Tensor, op: str) -> torch.Tensor:
    """All-reduce across torch.distributed ranks (gloo or nccl); sums, minima or maxima."""
    ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
    device = torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")
    moved = tensor.to(device)
    dist.all_reduce(moved, op=ops[op])
    return moved.cpu()


class MetricAccumulator:
    """Sums with counts, minima and maxima, reduced across workers in one call per kind."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, float] = {}
        self.mins: dict[str, float] = {}
        self.maxs: dict[str, float] = {}

    def add(self, name: str, total: float, count: float = 1.0) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + float(total)
        self.counts[name] = self.counts.get(name, 0.0) + float(count)

    def low(self, name: str, value: float) -> None:
        self.mins[name] = min(self.mins.get(name, math.inf), float(value))

    def high(self, name: str, value: float) -> None:
        self.maxs[name] = max(self.maxs.get(name, -math.inf), float(value))

    def reduce(self, reduce: ReduceFn = no_reduce, keys: dict[str, list[str]] | None = None) -> dict:
        """Means, minima and maxima over every worker; `keys` fixes the key sets shared by all ranks."""
        keys = keys or {"sum": sorted(self.sums), "min": sorted(self.mins), "max": sorted(self.maxs)}
        out: dict[str, float] = {}
        if keys["sum"]:
            packed = torch.tensor(
                [[self.sums.get(k, 0.0), self.counts.get(k, 0.0)] for k in keys["sum"]], dtype=torch.float64
            )
            packed = reduce(packed, "sum")
            for k, (total, count) in zip(keys["sum"], packed.tolist()):
                out[k] = total / count if count else 0.0
                out[k + "#total"] = total
                out[k + "#count"] = count
        for kind, table, fill in (("min", self.mins, math.inf), ("max", self.maxs, -math.inf)):
            if keys[kind]:
                packed = reduce(
                    torch.tensor([table.get(k, fill) for k in keys[kind]], dtype=torch.float64), kind
                )
                out.update(dict(zip(keys[kind], packed.tolist())))
        return out

    def key_sets(self) -> dict[str, list[str]]:
        return {"sum": sorted(self.sums), "min": sorted(self.mins), "max": sorted(self.maxs)}


def std_from_moments(total: float, total_sq: float, count: float) -> float:
    if count < 2:
        return 0.0
    mean = total / count
    return math.sqrt(max(total_sq / count - mean * mean, 0.0) * count / (count - 1))


def add_output_stats(acc: MetricAccumulator, out, batch: dict, saturation_threshold: float) -> None:
    """Logit range, stop logits, clues used and attention entropy of one batch."""
    with torch.no_grad():
        mask = batch["target_mask"]
        logits = out.logits.detach().float().permute(0, 2, 3, 1)[mask]
        if logits.numel():
            acc.low("logits/min", logits.min())
            acc.high("logits/max", logits.max())
            acc.add("logits/mean_abs", logits.abs().sum(), logits.numel())
        stop = out.stop_logits.detach().float()
        acc.add("stop/mean", stop.sum(), stop.numel())
        acc.add("stop/sq", (stop * stop).sum(), stop.numel())
        acc.low("stop/min", stop.min())
        acc.high("stop/max", stop.max())
        acc.add("stop/saturated_share", (stop.abs() > saturation_threshold).sum(), stop.numel())
        clues = out.clues_used.detach().float()
        acc.add("clues/mean", clues.sum(), clues.numel())
        acc.add("clues/sq", (clues * clues).sum(), clues.numel())
        a = out.attention_maps.detach().float().clamp_min(1e-6)
        entropy = -(a * a.log()).flatten(2).sum(-1).mean(-1)
        acc.add("train/entropy", entropy.sum(), entropy.numel())
        if out.lora is not None:
            acc.add("lora/delta_norm", out.lora.norm.detach(), 1)


def add_train_accuracy(acc: MetricAccumulator, logits: torch.Tensor, batch: dict) -> None:
    """Exact match (whole S x S canvas right, so the decoded grid is right too) and pixel accuracy."""
    with torch.no_grad():
        pred = logits.detach().argmax(1)
        mask = batch["target_mask"]
        wrong = ((pred != batch["query_targets"]) & mask).flatten(1).any(1)
        acc.add("train/exact_match", (~wrong).sum(), wrong.numel())
        h, w = batch["target_sizes"][:, 0], batch["target_sizes"][:, 1]
        rows = torch.arange(pred.shape[1], device=pred.device)
        inside = (rows[None, :, None] < h[:, None, None]) & (rows[None, None, :] < w[:, None, None])
        acc.add("train/pixel_accuracy", ((pred == batch["query_targets"]) & inside).sum(), inside.sum())


def finish_epoch(reduced: dict[str, float]) -> dict[str, float]:
    """Turn reduced sums into the published metric names (std from moments, helper keys dropped)."""
    out = {k: v for k, v in reduced.items() if "#" not in k and not k.endswith("/sq")}
    for name in ("stop", "clues"):
        key = f"{name}/mean"
        if key in reduced:
            out[f"{name}/std"] = std_from_moments(
                reduced[key + "#total"], reduced[f"{name}/sq#total"], reduced[key + "#count"]
            )
    for counter in ("nan_batches", "samples"):
        if counter + "#total" in reduced:
            out[counter] = reduced[counter + "#total"]
    return out
